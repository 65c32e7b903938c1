/* wire_names.c: the broker's names and the x-arguments of what warren
 * declares (wire.h), as rabbitmq/definitions.json writes them. */
#include "wire.h"

#include <stdio.h>

/* A service's objects are all "rpc." + service (+ ".lane"). */
#define WIRE_PREFIX WIRE_EXCHANGE "."

static bool fits(int n, size_t cap)
{
	return n >= 0 && (size_t)n < cap;
}

bool wire_service_queue(char *buf, size_t cap, const char *service)
{
	return fits(snprintf(buf, cap, WIRE_PREFIX "%s", service), cap);
}

bool wire_fast_queue(char *buf, size_t cap, const char *service)
{
	return fits(snprintf(buf, cap, WIRE_PREFIX "%s.fast", service), cap);
}

bool wire_batch_queue(char *buf, size_t cap, const char *service)
{
	return fits(snprintf(buf, cap, WIRE_PREFIX "%s.batch", service), cap);
}

bool wire_dlq(char *buf, size_t cap, const char *service)
{
	return fits(snprintf(buf, cap, WIRE_PREFIX "%s.dlq", service), cap);
}

bool wire_binding(char *buf, size_t cap, const char *service)
{
	return fits(snprintf(buf, cap, "%s.#", service), cap);
}

bool wire_reply_queue(char *buf, size_t cap, const char *app_id, const char *suffix)
{
	return fits(snprintf(buf, cap, WIRE_PREFIX "reply.%.64s.%s", app_id, suffix), cap);
}

const struct wire_delay_tier wire_delay_tiers[WIRE_DELAY_TIERS] = {
    {250, WIRE_DELAY_PREFIX "250ms"}, {500, WIRE_DELAY_PREFIX "500ms"},
    {1000, WIRE_DELAY_PREFIX "1s"},   {2000, WIRE_DELAY_PREFIX "2s"},
    {4000, WIRE_DELAY_PREFIX "4s"},   {8000, WIRE_DELAY_PREFIX "8s"},
    {16000, WIRE_DELAY_PREFIX "16s"}, {32000, WIRE_DELAY_PREFIX "32s"},
};

/* ------------------------------------------------------------ arguments */

#define BYTES(s)                                                                                   \
	{                                                                                          \
		.len = sizeof(s) - 1, .bytes = (void *)(s)                                         \
	}
#define STR_ARG(k, v)                                                                              \
	{                                                                                          \
		.key = BYTES(k), .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = BYTES(v) } \
	}
#define NENTRIES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static amqp_table_entry_t quorum_args[] = {STR_ARG("x-queue-type", "quorum")};
static amqp_table_entry_t classic_args[] = {STR_ARG("x-queue-type", "classic")};
static amqp_table_entry_t delay_args[] = {
    STR_ARG("x-queue-type", "quorum"),
    STR_ARG("x-dead-letter-exchange", WIRE_EXCHANGE),
    STR_ARG("x-dead-letter-strategy", "at-least-once"),
    STR_ARG("x-overflow", "reject-publish"),
};
static amqp_table_entry_t reply_args[] = {
    {.key = BYTES("x-expires"),
     .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = WIRE_REPLY_QUEUE_EXPIRES_MS}},
};

amqp_table_t wire_quorum_queue_args(void)
{
	return (amqp_table_t){NENTRIES(quorum_args), quorum_args};
}

amqp_table_t wire_fast_queue_args(void)
{
	return (amqp_table_t){NENTRIES(classic_args), classic_args};
}

amqp_table_t wire_delay_queue_args(void)
{
	return (amqp_table_t){NENTRIES(delay_args), delay_args};
}

amqp_table_t wire_reply_queue_args(void)
{
	return (amqp_table_t){NENTRIES(reply_args), reply_args};
}
