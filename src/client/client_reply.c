/* client_reply.c: the reply path: a reply (or a batch of them) is matched
 * to its call by correlation id, checked (signature, seal, status) and
 * ends the call; a stray or untrusted one is counted and dropped. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <sodium.h>

#include "backoff.h"
#include "batch.h"
#include "client_metrics.h"
#include "config.h"
#include "engine.h"
#include "envelope.h"
#include "fastrand.h"
#include "lanes.h"
#include "log.h"
#include "pending.h"
#include "reply.h"
#include "patterns.h"
#include "seal.h"
#include "security.h"
#include "trace.h"

#include "client_int.h"

static void count_stray(warren_client *c, const char *id)
{
	bool ours = strlen(id) == 32 && memcmp(id, c->prefix, 16) == 0;

	if (ours) {
		STAT_ADD(c, late_replies, 1);
		log_debug("late reply dropped: correlation_id=%s", id);
	} else {
		STAT_ADD(c, unknown_replies, 1);
		log_debug("unknown reply dropped: correlation_id=%s", id);
	}
}

/* A reply that fails authentication (a signature that does not verify, a
 * sealed body that does not open): not from our service, so it does not
 * end the call, which keeps waiting for the real reply or its deadline. */
static void drop_untrusted(warren_client *c, const char *id, const char *why)
{
	STAT_ADD(c, untrusted_replies, 1);
	log_warn("untrusted reply ignored: correlation_id=%s: %s", id, why);
}

/* The reply of a sealed call, opened into *opened (malloc'd; NULL bytes
 * when the reply came in the clear). A call sent in the clear takes only
 * clear replies; a sealed one takes sealed ones, and error replies in the
 * clear (a worker that could not open the request answers so). 0; -1 with
 * why for a mismatch of modes (the call ends: the sender is the service,
 * its signature verified, but it does not follow security.encrypt); -2
 * with why when the sealed body does not open (the box's authentication
 * fails: not from our service). */
static int open_reply(const struct call *call, const struct envelope_meta *m,
                      const amqp_bytes_t *body, amqp_bytes_t *opened, char *why, size_t whylen)
{
	if (!m->sealed && (call->seal_key == NULL || m->status != WARREN_STATUS_OK)) {
		return 0;
	}
	if (call->seal_key == NULL) {
		snprintf(why, whylen, "the reply is encrypted but its request was not");
		return -1;
	}
	if (!m->sealed) {
		snprintf(why, whylen,
		         "the reply is in the clear but its request was encrypted "
		         "(security.encrypt)");
		return -1;
	}
	if (seal_open(call->seal_key, body->bytes, body->len, &opened->bytes, &opened->len) != 0) {
		snprintf(why, whylen, "the reply cannot be decrypted with the service's key");
		return -2;
	}
	return 0;
}

/* One reply, alone or an entry of a batch: whatever came in a batch is
 * checked and handled exactly as if it had come alone. */
static void handle_reply(warren_client *c, const amqp_basic_properties_t *props,
                         const amqp_bytes_t *body)
{
	struct envelope_meta m;
	struct pending_entry *entry;
	char why[300];
	warren_reply *reply;
	amqp_bytes_t opened = {0};

	if (envelope_read(props, &m, why, sizeof(why)) != WARREN_OK) {
		log_warn("malformed reply dropped: %s", why);
		STAT_ADD(c, unknown_replies, 1);
		return;
	}
	entry = pending_find(&c->table, m.correlation_id, strlen(m.correlation_id));
	if (entry == NULL) {
		count_stray(c, m.correlation_id);
		return;
	}
	struct call *call = (struct call *)((char *)entry - offsetof(struct call, entry));
	if (c->sec != NULL && security_check_reply(c->sec, props, &m, body->bytes, body->len, why,
	                                           sizeof(why)) != WARREN_STATUS_OK) {
		drop_untrusted(c, m.correlation_id, why);
		return;
	}
	int rc = open_reply(call, &m, body, &opened, why, sizeof(why));
	if (rc == -2) {
		drop_untrusted(c, m.correlation_id, why);
		return;
	}
	if (rc != 0) {
		client_finish(call, WARREN_ERR_DECODE, NULL, "%s", why);
		return;
	}
	reply =
	    opened.bytes != NULL
	        ? reply_from_message(&m, opened.bytes, opened.len, c->max_size, why, sizeof(why))
	        : reply_from_message(&m, body->bytes, body->len, c->max_size, why, sizeof(why));
	free(opened.bytes);
	if (reply == NULL) {
		client_finish(call, WARREN_ERR_DECODE, NULL, "%s", why);
	} else {
		client_finish(call,
		              reply->status == WARREN_STATUS_OK ? WARREN_OK : WARREN_ERR_REMOTE,
		              reply, NULL);
	}
}

/* A batch of replies (warren(7) BATCHES): split, each entry a reply. One
 * that does not decode is dropped whole and counted: its calls keep
 * waiting, to their deadlines or a retry's reply. */
static void handle_batch(warren_client *c, const struct engine_delivery *d)
{
	struct batch *b = NULL;
	char why[300];

	if (batch_decode(&d->message.properties, d->message.body.bytes, d->message.body.len,
	                 c->max_size, &b, why, sizeof(why)) != WARREN_OK) {
		STAT_ADD(c, bad_batches, 1);
		log_warn("malformed batch of replies dropped: %s", why);
		return;
	}
	STAT_ADD(c, reply_batches, 1);
	for (size_t i = 0; i < b->n; i++) {
		handle_reply(c, &b->entries[i].props, &b->entries[i].body);
	}
	batch_free(b);
}

void client_deliver(struct engine *e, void *arg, struct engine_delivery *d)
{
	warren_client *c = arg;

	if (batch_is(&d->message.properties)) {
		handle_batch(c, d);
	} else {
		handle_reply(c, &d->message.properties, &d->message.body);
	}
	if (c->reply_mode == REPLY_QUEUE) {
		engine_ack(e, d->generation, d->delivery_tag); /* handled, whatever it was */
	}
	engine_delivery_free(d);
}
