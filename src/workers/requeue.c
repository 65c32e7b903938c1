/* requeue.c: what this worker gave back to its queue itself. A quorum
 * queue's x-delivery-count counts every return of a message, whatever the
 * cause: a worker that died with it, but also a reject with requeue and a
 * connection lost while a live worker held it (queued, running, or
 * awaiting a confirm). Only the first kind is a crash. The worker notes
 * each return it causes, keyed by the request, and the crash count of a
 * delivery is its x-delivery-count less the returns noted for it (see
 * worker.crash_limit in warren.conf(5)). */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "worker_int.h"
#include "wire.h"

#define NOTES_MIN 256

bool requeue_init(struct warren_worker *w)
{
	/* Each lost connection returns at most prefetch requests: room for a
	 * few rounds of them, the oldest overwritten after that. */
	w->notes.n = (size_t)w->settings.prefetch * 4 > NOTES_MIN ? (size_t)w->settings.prefetch * 4
	                                                          : NOTES_MIN;
	w->notes.list = calloc(w->notes.n, sizeof(*w->notes.list));
	return w->notes.list != NULL;
}

static void hash_field(crypto_generichash_state *st, bool present, amqp_bytes_t b)
{
	unsigned char len[8];
	uint64_t n = present ? b.len + 1 : 0;

	for (int i = 0; i < 8; i++) {
		len[i] = (unsigned char)(n >> (8 * i));
	}
	crypto_generichash_update(st, len, sizeof(len));
	if (present && b.len > 0) {
		crypto_generichash_update(st, b.bytes, b.len);
	}
}

/* A request, as its every delivery shows it: its ids and its body. */
static uint64_t requeue_key(const struct engine_delivery *d)
{
	const amqp_basic_properties_t *p = &d->message.properties;
	crypto_generichash_state st;
	unsigned char out[8];
	uint64_t key = 0;

	crypto_generichash_init(&st, NULL, 0, sizeof(out));
	hash_field(&st, p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG, p->correlation_id);
	hash_field(&st, p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG, p->message_id);
	hash_field(&st, true, d->message.body);
	crypto_generichash_final(&st, out, sizeof(out));
	memcpy(&key, out, sizeof(key));
	return key != 0 ? key : 1;
}

void requeue_note_locked(struct warren_worker *w, struct job *j)
{
	uint64_t key;

	if (j->delivery == NULL || j->noted || w->notes.list == NULL) {
		return;
	}
	j->noted = true;
	key = requeue_key(j->delivery);
	for (size_t i = 0; i < w->notes.n; i++) {
		if (w->notes.list[i].key == key) {
			w->notes.list[i].count++;
			return;
		}
	}
	w->notes.list[w->notes.next] = (struct requeue_note){.key = key, .count = 1};
	w->notes.next = (w->notes.next + 1) % w->notes.n;
}

void requeue_note(struct warren_worker *w, struct job *j)
{
	pthread_mutex_lock(&w->mu);
	requeue_note_locked(w, j);
	pthread_mutex_unlock(&w->mu);
}

/* The deliveries of d less the returns noted for it; n: its x-delivery-count. */
static int unexplained(struct warren_worker *w, const struct engine_delivery *d, int n)
{
	uint64_t key;

	if (n <= 0 || w->notes.list == NULL) {
		return n > 0 ? n : 0;
	}
	key = requeue_key(d);
	pthread_mutex_lock(&w->mu);
	for (size_t i = 0; i < w->notes.n; i++) {
		if (w->notes.list[i].key == key) {
			n -= w->notes.list[i].count;
			break;
		}
	}
	pthread_mutex_unlock(&w->mu);
	return n > 0 ? n : 0;
}

int requeue_crashes(struct warren_worker *w, const struct job *j)
{
	return unexplained(w, j->delivery, j->meta.delivery_count);
}

bool requeue_suspect(struct warren_worker *w, const struct engine_delivery *d)
{
	/* crash_limit 0: crashes are left to the broker, nothing is isolated. */
	return w->settings.crash_limit > 0 &&
	       unexplained(w, d, envelope_delivery_count(&d->message.properties)) >= 1;
}

bool requeue_noted(struct warren_worker *w, const struct engine_delivery *d)
{
	uint64_t key = requeue_key(d);
	bool noted = false;

	if (w->notes.list == NULL) {
		return false;
	}
	pthread_mutex_lock(&w->mu);
	for (size_t i = 0; i < w->notes.n && !noted; i++) {
		noted = w->notes.list[i].key == key && w->notes.list[i].count > 0;
	}
	pthread_mutex_unlock(&w->mu);
	return noted;
}
