/* wire_declare.c: every broker object warren declares, with the type,
 * durability and arguments of rabbitmq/definitions.json (wire.h). */
#include "wire.h"

#include <stdio.h>

/* Service, lane and dead-letter names: "rpc." + 64 bytes + ".batch". */
#define NAME_MAX_LEN 96

static amqp_bytes_t b(const char *s)
{
	return amqp_cstring_bytes(s);
}

static bool declare_exchange_of(amqp_connection_state_t conn, amqp_channel_t ch, const char *name,
                                const char *type)
{
	return amqp_exchange_declare(conn, ch, b(name), b(type), 0, 1, 0, 0, amqp_empty_table) !=
	       NULL;
}

static bool declare_queue_with(amqp_connection_state_t conn, amqp_channel_t ch, const char *name,
                               bool durable, amqp_table_t args)
{
	return amqp_queue_declare(conn, ch, b(name), 0, durable, 0, 0, args) != NULL;
}

bool wire_declare_exchange(amqp_connection_state_t conn, amqp_channel_t ch, const char *name)
{
	return declare_exchange_of(conn, ch, name, "topic");
}

bool wire_check_exchange(amqp_connection_state_t conn, amqp_channel_t ch, const char *name)
{
	return amqp_exchange_declare(conn, ch, b(name), b("topic"), 1, 1, 0, 0, amqp_empty_table) !=
	       NULL;
}

bool wire_declare_fast_queue(amqp_connection_state_t conn, amqp_channel_t ch, const char *name)
{
	return declare_queue_with(conn, ch, name, true, wire_fast_queue_args());
}

/* Not durable, and deleted by the broker WIRE_REPLY_QUEUE_EXPIRES_MS after
 * its caller last used it: it belongs to one process. */
bool wire_declare_reply_queue(amqp_connection_state_t conn, amqp_channel_t ch, const char *name)
{
	return declare_queue_with(conn, ch, name, false, wire_reply_queue_args());
}

bool wire_bind(amqp_connection_state_t conn, amqp_channel_t ch, const char *queue,
               const char *exchange, const char *key)
{
	return amqp_queue_bind(conn, ch, b(queue), b(exchange), b(key), amqp_empty_table) != NULL;
}

/* ------------------------------------------------------------ a service */

/* Each step says what it did when it failed. */
static bool exchange_step(amqp_connection_state_t conn, amqp_channel_t ch, const char *name,
                          const char *type, char *what, size_t whatlen)
{
	if (declare_exchange_of(conn, ch, name, type)) {
		return true;
	}
	snprintf(what, whatlen, "declaring exchange %s", name);
	return false;
}

static bool queue_step(amqp_connection_state_t conn, amqp_channel_t ch, const char *name,
                       amqp_table_t args, char *what, size_t whatlen)
{
	if (declare_queue_with(conn, ch, name, true, args)) {
		return true;
	}
	snprintf(what, whatlen, "declaring queue %s", name);
	return false;
}

static bool bind_step(amqp_connection_state_t conn, amqp_channel_t ch, const char *queue,
                      const char *exchange, const char *key, char *what, size_t whatlen)
{
	if (wire_bind(conn, ch, queue, exchange, key)) {
		return true;
	}
	snprintf(what, whatlen, "binding %s to %s", queue, exchange);
	return false;
}

/* A delay tier: its fanout exchange, its queue, bound with no key. */
static bool delay_tier_step(amqp_connection_state_t conn, amqp_channel_t ch,
                            const struct wire_delay_tier *t, char *what, size_t whatlen)
{
	return exchange_step(conn, ch, t->name, "fanout", what, whatlen) &&
	       queue_step(conn, ch, t->name, wire_delay_queue_args(), what, whatlen) &&
	       bind_step(conn, ch, t->name, t->name, "", what, whatlen);
}

bool wire_declare_service(amqp_connection_state_t conn, amqp_channel_t ch, const char *service,
                          char *what, size_t whatlen)
{
	char queue[NAME_MAX_LEN], dlq[NAME_MAX_LEN], batch[NAME_MAX_LEN], key[NAME_MAX_LEN];
	amqp_table_t quorum = wire_quorum_queue_args();

	for (int i = 0; i < WIRE_DELAY_TIERS; i++) {
		if (!delay_tier_step(conn, ch, &wire_delay_tiers[i], what, whatlen)) {
			return false;
		}
	}
	wire_service_queue(queue, sizeof(queue), service);
	wire_dlq(dlq, sizeof(dlq), service);
	wire_batch_queue(batch, sizeof(batch), service);
	wire_binding(key, sizeof(key), service);
	return exchange_step(conn, ch, WIRE_EXCHANGE, "topic", what, whatlen) &&
	       exchange_step(conn, ch, WIRE_DLX, "topic", what, whatlen) &&
	       queue_step(conn, ch, queue, quorum, what, whatlen) &&
	       queue_step(conn, ch, dlq, quorum, what, whatlen) &&
	       bind_step(conn, ch, queue, WIRE_EXCHANGE, key, what, whatlen) &&
	       bind_step(conn, ch, dlq, WIRE_DLX, key, what, whatlen) &&
	       /* The lane of batches, which only workers that take them consume. */
	       exchange_step(conn, ch, WIRE_BATCH_EXCHANGE, "topic", what, whatlen) &&
	       queue_step(conn, ch, batch, quorum, what, whatlen) &&
	       bind_step(conn, ch, batch, WIRE_BATCH_EXCHANGE, key, what, whatlen);
}

bool wire_declare_fast_lane(amqp_connection_state_t conn, amqp_channel_t ch, const char *service)
{
	char queue[NAME_MAX_LEN], key[NAME_MAX_LEN];

	wire_fast_queue(queue, sizeof(queue), service);
	wire_binding(key, sizeof(key), service);
	return wire_declare_exchange(conn, ch, WIRE_FAST_EXCHANGE) &&
	       wire_declare_fast_queue(conn, ch, queue) &&
	       wire_bind(conn, ch, queue, WIRE_FAST_EXCHANGE, key);
}
