/* replycache.c: a worker's reply cache (replycache.h). The table is the
 * client's correlation table (src/client/pending.c: a chained hash plus a
 * min-heap by deadline, fixed at init), keyed by a BLAKE2b digest of the
 * caller's identity, the message id and the method. An entry's deadline is
 * the end of its TTL, counted from the start of its run (so that a run costs
 * one insertion, not a move in the heap when it ends): the heap's first
 * entry is the oldest, the one that expires or is evicted first. A run
 * still going is neither (its twins wait on it): it stops expiry until it
 * ends, and a full cache whose oldest entry is a run keeps nothing new.
 * Eviction is in order of insertion, not LRU: the TTL is the documented
 * reach of the cache, and a hit that made a reply live longer would stretch
 * it; a repeat is mostly answered once (a caller's resend, a redelivery).
 *
 * Lock rule: mu guards the table, every entry and the hit count; every
 * function takes it (any thread). The answer callbacks of replycache_finish
 * run after it is released, on the finishing thread. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "engine.h"
#include "pending.h"
#include "replycache.h"

#define KEY_BYTES 16 /* 128 bits: no two callers' keys collide by chance */

/* Bodies up to this size live in their entry: no allocation per reply. */
#define SMALL_BODY 200

struct replycache_entry {
	struct pending_entry pe; /* first: the table's entry (key, deadline) */
	bool running;
	struct replycache_waiter *parked; /* while running: its twins, last first */
	int status, format;
	void *body; /* small, or malloc'd when larger */
	size_t len;
	struct replycache_entry *next_free;
	unsigned char small[SMALL_BODY];
};

struct replycache {
	pthread_mutex_t mu;
	struct pending table;
	size_t size;
	size_t max_bytes, bytes; /* of the bodies kept: the bound, and now */
	int64_t ttl_ms;
	uint64_t hits;
	/* The entries, in memory fixed at init (as the table's): a request
	 * allocates nothing but a large reply's copy. Those never used yet are
	 * slab[nused..]; the others that left the table are on free. */
	struct replycache_entry *slab, *free;
	size_t nused;
};

int replycache_new(struct replycache **out, size_t size, size_t max_bytes, int64_t ttl_ms)
{
	struct replycache *c;

	*out = NULL;
	if (size == 0) {
		return 0;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL || pending_init(&c->table, size) != 0) {
		free(c);
		return -1;
	}
	c->slab = calloc(size, sizeof(*c->slab));
	if (c->slab == NULL) {
		pending_destroy(&c->table);
		free(c);
		return -1;
	}
	pthread_mutex_init(&c->mu, NULL);
	c->size = size;
	c->max_bytes = max_bytes;
	c->ttl_ms = ttl_ms;
	*out = c;
	return 0;
}

static void body_free(struct replycache_entry *e)
{
	if (e->body != e->small) {
		free(e->body);
	}
	e->body = NULL;
	e->len = 0;
}

/* Under mu: e, out of the table, is free for the next run. */
static void entry_put(struct replycache *c, struct replycache_entry *e)
{
	body_free(e);
	e->next_free = c->free;
	c->free = e;
}

/* Under mu: an entry for a run; there is one, as the table has room. */
static struct replycache_entry *entry_get(struct replycache *c)
{
	struct replycache_entry *e = c->free;

	if (e != NULL) {
		c->free = e->next_free;
	} else if (c->nused < c->size) {
		e = &c->slab[c->nused++];
	}
	return e;
}

struct drop_ctx {
	void (*drop)(struct replycache_waiter *, void *);
	void *arg;
};

static void drop_entry(struct pending_entry *pe, void *arg)
{
	struct replycache_entry *e = (struct replycache_entry *)pe;
	struct drop_ctx *d = arg;
	struct replycache_waiter *w, *next;

	for (w = e->parked; w != NULL; w = next) {
		next = w->next;
		if (d->drop != NULL) {
			d->drop(w, d->arg);
		}
	}
	body_free(e);
}

void replycache_free(struct replycache *c, void (*drop)(struct replycache_waiter *, void *),
                     void *arg)
{
	struct drop_ctx d = {drop, arg};

	if (c == NULL) {
		return;
	}
	pending_each(&c->table, drop_entry, &d);
	pending_destroy(&c->table);
	free(c->slab);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

/* The key: a digest of the parts, each NUL-terminated, as hex (pending's
 * ids are text). */
static void make_key(const char *identity, const char *message_id, const char *method,
                     char out[2 * KEY_BYTES + 1])
{
	crypto_generichash_state st;
	unsigned char h[KEY_BYTES];

	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)identity, strlen(identity) + 1);
	crypto_generichash_update(&st, (const unsigned char *)message_id, strlen(message_id) + 1);
	crypto_generichash_update(&st, (const unsigned char *)method, strlen(method));
	crypto_generichash_final(&st, h, sizeof(h));
	sodium_bin2hex(out, 2 * KEY_BYTES + 1, h, sizeof(h));
}

/* Under mu: e leaves the table and is freed. */
static void remove_locked(struct replycache *c, struct replycache_entry *e)
{
	pending_remove(&c->table, &e->pe);
	c->bytes -= e->len;
	entry_put(c, e);
}

/* Under mu: the replies whose TTL has passed go. */
static void expire_locked(struct replycache *c, int64_t now)
{
	struct pending_entry *pe;

	while ((pe = pending_first(&c->table)) != NULL && pe->deadline <= now &&
	       !((struct replycache_entry *)pe)->running) {
		remove_locked(c, (struct replycache_entry *)pe);
	}
}

/* Under mu: the oldest replies go until len more bytes fit; false when
 * they cannot (the oldest entry is a run, which holds no bytes). */
static bool make_bytes_locked(struct replycache *c, size_t len)
{
	struct replycache_entry *oldest;

	while (c->bytes + len > c->max_bytes) {
		oldest = (struct replycache_entry *)pending_first(&c->table);
		if (oldest == NULL || oldest->running) {
			return false;
		}
		remove_locked(c, oldest);
	}
	return true;
}

/* Under mu: room for one more, the oldest reply evicted if need be; false
 * when every entry is a run (they are never evicted: twins wait on them). */
static bool make_room_locked(struct replycache *c)
{
	struct replycache_entry *oldest;

	if (pending_count(&c->table) < c->size) {
		return true;
	}
	oldest = (struct replycache_entry *)pending_first(&c->table);
	if (oldest == NULL || oldest->running) {
		return false;
	}
	remove_locked(c, oldest);
	return true;
}

static struct replycache_entry *start_run_locked(struct replycache *c, const char *key)
{
	struct replycache_entry *e;

	if (!make_room_locked(c)) {
		return NULL;
	}
	e = entry_get(c);
	if (e == NULL) {
		return NULL;
	}
	e->parked = NULL;
	e->body = NULL;
	e->len = 0;
	snprintf(e->pe.id, sizeof(e->pe.id), "%s", key);
	e->pe.id_len = strlen(key);
	e->pe.deadline = engine_now() + c->ttl_ms;
	e->running = true;
	pending_insert(&c->table, &e->pe);
	return e;
}

static void copy_hit(const struct replycache_entry *e, void *(*alloc)(size_t, void *),
                     void *alloc_arg, struct replycache_reply *hit)
{
	void *body = e->len > 0 ? alloc(e->len, alloc_arg) : NULL;

	if (body != NULL) {
		memcpy(body, e->body, e->len);
	}
	*hit = (struct replycache_reply){.status = e->status,
	                                 .format = e->format,
	                                 .body = body,
	                                 .len = body != NULL ? e->len : 0};
}

enum replycache_verdict
replycache_claim(struct replycache *c, const char *identity, const char *message_id,
                 const char *method, struct replycache_waiter *w, struct replycache_entry **ticket,
                 void *(*alloc)(size_t, void *), void *alloc_arg, struct replycache_reply *hit)
{
	char key[2 * KEY_BYTES + 1];
	struct replycache_entry *e;
	enum replycache_verdict v = REPLYCACHE_RUN;

	*ticket = NULL;
	if (c == NULL || message_id[0] == '\0') {
		return REPLYCACHE_RUN; /* no key: every copy runs */
	}
	make_key(identity, message_id, method, key);
	pthread_mutex_lock(&c->mu);
	expire_locked(c, engine_now());
	e = (struct replycache_entry *)pending_find(&c->table, key, strlen(key));
	if (e == NULL) {
		*ticket = start_run_locked(c, key);
	} else if (e->running) {
		w->next = e->parked;
		e->parked = w;
		v = REPLYCACHE_PARKED;
	} else {
		copy_hit(e, alloc, alloc_arg, hit);
		c->hits++;
		v = REPLYCACHE_HIT;
	}
	pthread_mutex_unlock(&c->mu);
	return v;
}

/* Under mu: the run's reply is kept until its TTL ends, older ones evicted
 * for its bytes; false when it is larger than the whole bound, no room can
 * be made or it could not be copied (the caller then removes e). */
static bool keep_locked(struct replycache *c, struct replycache_entry *e,
                        const struct replycache_reply *r)
{
	if (r->len > c->max_bytes || !make_bytes_locked(c, r->len)) {
		return false;
	}
	if (r->len > 0) {
		e->body = r->len <= sizeof(e->small) ? e->small : malloc(r->len);
		if (e->body == NULL) {
			return false;
		}
		memcpy(e->body, r->body, r->len);
	}
	e->len = r->len;
	c->bytes += r->len;
	e->status = r->status;
	e->format = r->format;
	e->running = false;
	return true;
}

void replycache_finish(
    struct replycache *c, struct replycache_entry *ticket, const struct replycache_reply *reply,
    void (*answer)(struct replycache_waiter *, const struct replycache_reply *, void *), void *arg)
{
	struct replycache_waiter *parked, *next;

	if (c == NULL || ticket == NULL) {
		return;
	}
	pthread_mutex_lock(&c->mu);
	parked = ticket->parked;
	ticket->parked = NULL;
	if (reply == NULL || !keep_locked(c, ticket, reply)) {
		remove_locked(c, ticket);
	}
	for (struct replycache_waiter *w = parked; reply != NULL && w != NULL; w = w->next) {
		c->hits++;
	}
	pthread_mutex_unlock(&c->mu);
	for (; parked != NULL; parked = next) {
		next = parked->next;
		answer(parked, reply, arg);
	}
}

size_t replycache_count(struct replycache *c)
{
	size_t n;

	if (c == NULL) {
		return 0;
	}
	pthread_mutex_lock(&c->mu);
	n = pending_count(&c->table);
	pthread_mutex_unlock(&c->mu);
	return n;
}

size_t replycache_bytes(struct replycache *c)
{
	size_t n;

	if (c == NULL) {
		return 0;
	}
	pthread_mutex_lock(&c->mu);
	n = c->bytes;
	pthread_mutex_unlock(&c->mu);
	return n;
}

uint64_t replycache_hits(struct replycache *c)
{
	uint64_t n;

	if (c == NULL) {
		return 0;
	}
	pthread_mutex_lock(&c->mu);
	n = c->hits;
	pthread_mutex_unlock(&c->mu);
	return n;
}
