/* batch.h: the batch format of the wire contract (warren(7), BATCHES): one
 * AMQP message carrying N messages that would otherwise have been sent
 * alone, each with its own properties and body, so that the broker pays
 * for one message instead of N. */
#ifndef WARREN_BATCH_H
#define WARREN_BATCH_H

#include <amqp.h>
#include <amqp_framing.h>

#include "warren.h"

#define BATCH_CONTENT_TYPE "application/x-warren-batch"
/* On a batch: the format version (an integer). */
#define BATCH_HEADER "rpc-batch"
/* On a request: the highest batch format version its caller reads in replies. */
#define BATCH_ACCEPT_HEADER "rpc-accept-batch"
#define BATCH_VERSION       1
/* On a request a worker republished alone from a batch redelivered after a
 * crash: the batch's x-delivery-count, which its entries' crash counts
 * start from (warren(7) BATCHES). */
#define BATCH_CRASHES_HEADER "rpc-crashes"
/* Batches of requests travel on a lane of their own, which only workers
 * that take batches consume: the topic exchange WIRE_BATCH_EXCHANGE,
 * routing key the service, and per service its batch queue (wire.h). */
/* The most entries one batch may carry (a writer splits beyond). */
#define BATCH_MAX_ENTRIES 1024
/* The most bytes a writer puts in one batch: an entry that would take a
 * batch beyond goes in the next one (or alone), so that a batch is never
 * much larger than one request and the socket is never asked to take
 * many large messages in one write (engine_writable). */
#define BATCH_MAX_BYTES 65536

/* One message of a batch: its basic properties (content_type,
 * content_encoding, headers, correlation_id, reply_to, message_id,
 * timestamp, type, app_id; the rest is not carried) and its body. */
struct batch_item {
	const amqp_basic_properties_t *props;
	const void *body;
	size_t len;
};

/* A decoded batch. Every entry's properties and body point into the batch,
 * which must outlive their use. */
struct batch_entry {
	amqp_basic_properties_t props;
	amqp_bytes_t body;
};
struct batch {
	size_t n;
	struct batch_entry *entries;
	warren_value *root;        /* the decoded body the entries point into */
	amqp_table_entry_t *table; /* every entry's headers, one after another */
};

/* Whether p says its message is a batch (content_type). */
bool batch_is(const amqp_basic_properties_t *p);

/* The most bytes item adds to an encoded batch: a writer that keeps the
 * sum, plus BATCH_OVERHEAD, under message.max_size makes batches that a
 * reader with the same limit takes. */
#define BATCH_OVERHEAD 5
size_t batch_item_bound(const struct batch_item *item);

/* Encodes n >= 1 items into a malloc'd body (*out, *outlen). */
warren_err batch_encode(const struct batch_item *items, size_t n, void **out, size_t *outlen);

/* Fills the properties of a batch message: content_type, rpc-batch, and
 * delivery_mode (2 when persistent). headers must have room for 1 entry
 * and outlive the publish. */
void batch_props(amqp_basic_properties_t *p, amqp_table_entry_t *headers, bool persistent);

/* Decodes a batch message. Refuses, with errstr naming the problem ("entry
 * 2: unknown key \"priority\""): a version other than BATCH_VERSION in the
 * rpc-batch header, a body above max_size, anything but an array of 1 to
 * BATCH_MAX_ENTRIES maps, an unknown or ill-typed key, a missing body
 * (each entry is smaller than the whole), a string property above 255 bytes, a header value
 * other than a string, an integer or binary. On success *out is the
 * caller's (batch_free). Each entry has the batch's delivery_mode. */
warren_err batch_decode(const amqp_basic_properties_t *p, const void *body, size_t len,
                        size_t max_size, struct batch **out, char *errstr, size_t errlen);
void batch_free(struct batch *b); /* NULL-safe */

#endif
