/* replycache.c: a worker's reply cache (replycache.h). A chained hash
 * table over entries in memory fixed at init (a slab and a free list),
 * and a list of the entries in the order they were made, oldest first.
 * The key is the caller's identity, the message id and the method, kept
 * and compared whole; its hash is SipHash (libsodium's crypto_shorthash,
 * keyed at random per cache), so that no caller can choose message ids
 * that pile up in one chain. Per request this costs one hash of the key,
 * one lookup, one insertion at the end of the list, and the mutex once:
 * the run's end needs no lock (below).
 *
 * An entry's TTL counts from the start of its run, so the list's order is
 * the order of expiry: the first entries expire and are evicted first.
 * Eviction is in that order, not LRU: the TTL is the documented reach of
 * the cache, and a hit that made a reply live longer would stretch it; a
 * repeat is mostly answered once (a caller's resend, a redelivery). A run
 * still going is neither expired nor evicted (its twins wait on it): the
 * walk skips it, and there are at most as many as requests in progress.
 *
 * Lock rule: mu guards the table, the list, the free list and the count.
 * A run's entry is the run's own until it ends: its thread writes the
 * reply into it without mu, then swaps FINISHED into its parked list
 * (release); a claim under mu pushes a twin on that list with a
 * compare-and-swap and reads the reply only once it has seen FINISHED
 * (acquire). Nothing else touches a running entry: it is not evicted, and
 * only its own run removes it (under mu, when it keeps nothing). bytes is
 * reserved with a compare-and-swap, so the bound holds without mu; hits
 * is a counter. The answer callbacks run on the finishing thread, without
 * mu. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <sodium.h>

#include "engine.h"
#include "replycache.h"

/* A key is at most this long: the envelope's fields are bounded far below
 * (app_id 127, message_id 64, method 255 bytes); a longer one is not
 * cached (its copies run). */
#define KEY_MAX 512
/* Keys and bodies up to these sizes live in their entry: no allocation
 * per request. */
#define SMALL_KEY  96
#define SMALL_BODY 200

/* The parked list of a run that ended with a reply kept. */
static struct replycache_waiter finished_mark;
#define FINISHED (&finished_mark)

struct replycache_entry {
	LIST_ENTRY(replycache_entry) link; /* under mu: in its bucket, or on the free list */
	uint64_t hash;
	size_t key_len;
	unsigned char *key;                  /* small_key, or malloc'd when longer */
	TAILQ_ENTRY(replycache_entry) order; /* under mu: in the list, oldest first */
	int64_t deadline;                    /* engine_now() ms its TTL ends */
	/* While it runs: the twins parked on it, last first (NULL: none);
	 * FINISHED once its reply is in (see the lock rule above). */
	_Atomic(struct replycache_waiter *) parked;
	/* The reply, written by the run before FINISHED: */
	int status, format;
	void *body; /* small_body, or malloc'd when larger; NULL: none */
	size_t len;
	unsigned char small_key[SMALL_KEY];
	unsigned char small_body[SMALL_BODY];
};

LIST_HEAD(replycache_chain, replycache_entry);
TAILQ_HEAD(replycache_order, replycache_entry);

struct replycache {
	pthread_mutex_t mu;
	struct replycache_chain *buckets; /* a power of two of them */
	size_t mask;
	struct replycache_order order;
	size_t size, count; /* the bound on entries, and the entries now */
	/* The entries: those never used yet are slab[nused..]; the others
	 * that left the table are on free. */
	struct replycache_entry *slab;
	size_t nused;
	struct replycache_chain free;
	size_t max_bytes;
	atomic_size_t bytes; /* of the bodies kept (reserved before they are) */
	int64_t ttl_ms;
	atomic_uint_fast64_t hits;
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
};

static size_t buckets_for(size_t size)
{
	size_t n = 1;

	while (n < size) {
		n <<= 1;
	}
	return n;
}

int replycache_new(struct replycache **out, size_t size, size_t max_bytes, int64_t ttl_ms)
{
	struct replycache *c;
	/* Twice the entries: a lookup that misses (most do) walks 0.3 entries
	 * on average when full, each a cache miss (the profile's hot spot). */
	size_t nb = buckets_for(2 * size);

	*out = NULL;
	if (size == 0) {
		return 0;
	}
	if (sodium_init() < 0) {
		return -1;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		return -1;
	}
	c->slab = calloc(size, sizeof(*c->slab));
	c->buckets = calloc(nb, sizeof(*c->buckets));
	if (c->slab == NULL || c->buckets == NULL) {
		free(c->slab);
		free(c->buckets);
		free(c);
		return -1;
	}
	pthread_mutex_init(&c->mu, NULL);
	c->mask = nb - 1;
	TAILQ_INIT(&c->order);
	LIST_INIT(&c->free);
	c->size = size;
	c->max_bytes = max_bytes;
	c->ttl_ms = ttl_ms;
	crypto_shorthash_keygen(c->hash_key);
	*out = c;
	return 0;
}

static bool running(struct replycache_entry *e)
{
	return atomic_load_explicit(&e->parked, memory_order_acquire) != FINISHED;
}

static void entry_clear(struct replycache_entry *e)
{
	if (e->body != e->small_body) {
		free(e->body);
	}
	if (e->key != e->small_key) {
		free(e->key);
	}
	e->body = NULL;
	e->len = 0;
	e->key = NULL;
}

void replycache_free(struct replycache *c, void (*drop)(struct replycache_waiter *, void *),
                     void *arg)
{
	struct replycache_entry *e;
	struct replycache_waiter *w, *next;

	if (c == NULL) {
		return;
	}
	TAILQ_FOREACH(e, &c->order, order)
	{
		w = atomic_load(&e->parked);
		for (; w != NULL && w != FINISHED; w = next) {
			next = w->next;
			if (drop != NULL) {
				drop(w, arg);
			}
		}
		entry_clear(e);
	}
	free(c->buckets);
	free(c->slab);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

/* The key: 'k' (a signer's key id) or 'a' (an app_id), the caller, the
 * message id and the method, NUL between them. Its length, 0 when longer
 * than KEY_MAX. */
static size_t make_key(const struct replycache_key *k, unsigned char out[KEY_MAX])
{
	size_t a = strlen(k->caller), b = strlen(k->message_id), m = strlen(k->method);
	size_t n = 0;

	if (3 + a + b + m > KEY_MAX) {
		return 0;
	}
	out[n++] = k->signer ? 'k' : 'a';
	memcpy(out + n, k->caller, a + 1);
	n += a + 1;
	memcpy(out + n, k->message_id, b + 1);
	n += b + 1;
	memcpy(out + n, k->method, m);
	return n + m;
}

/* Under mu. */
static struct replycache_entry *find_locked(struct replycache *c, uint64_t hash,
                                            const unsigned char *key, size_t len)
{
	struct replycache_entry *e;

	LIST_FOREACH(e, &c->buckets[hash & c->mask], link)
	{
		if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0) {
			return e;
		}
	}
	return NULL;
}

/* Under mu: e leaves the table for the free list. */
static void remove_locked(struct replycache *c, struct replycache_entry *e)
{
	LIST_REMOVE(e, link);
	TAILQ_REMOVE(&c->order, e, order);
	c->count--;
	atomic_fetch_sub_explicit(&c->bytes, e->len, memory_order_relaxed);
	entry_clear(e);
	LIST_INSERT_HEAD(&c->free, e, link);
}

/* Under mu: the oldest entry that is not a run, or NULL. */
static struct replycache_entry *oldest_reply_locked(struct replycache *c)
{
	struct replycache_entry *e;

	TAILQ_FOREACH(e, &c->order, order)
	{
		if (!running(e)) {
			return e;
		}
	}
	return NULL;
}

/* Under mu: the replies whose TTL has passed go. */
static void expire_locked(struct replycache *c, int64_t now)
{
	struct replycache_entry *e, *next;

	for (e = TAILQ_FIRST(&c->order); e != NULL && e->deadline <= now; e = next) {
		next = TAILQ_NEXT(e, order);
		if (!running(e)) {
			remove_locked(c, e);
		}
	}
}

/* Under mu: an entry for a run of key, the oldest reply evicted if the
 * cache is full; NULL when every entry is a run (they are never evicted:
 * twins wait on them) or out of memory for a long key. */
static struct replycache_entry *start_run_locked(struct replycache *c, uint64_t hash,
                                                 const unsigned char *key, size_t len, int64_t now)
{
	struct replycache_entry *e;

	if (c->count == c->size) {
		e = oldest_reply_locked(c);
		if (e == NULL) {
			return NULL;
		}
		remove_locked(c, e);
	}
	e = LIST_FIRST(&c->free);
	if (e != NULL) {
		LIST_REMOVE(e, link);
	} else {
		e = &c->slab[c->nused++]; /* count < size: one is left */
	}
	e->key = len <= sizeof(e->small_key) ? e->small_key : malloc(len);
	if (e->key == NULL) {
		LIST_INSERT_HEAD(&c->free, e, link);
		return NULL;
	}
	memcpy(e->key, key, len);
	e->key_len = len;
	e->hash = hash;
	e->deadline = now + c->ttl_ms;
	atomic_store_explicit(&e->parked, NULL, memory_order_relaxed);
	LIST_INSERT_HEAD(&c->buckets[hash & c->mask], e, link);
	TAILQ_INSERT_TAIL(&c->order, e, order);
	c->count++;
	return e;
}

/* Under mu: e's reply (FINISHED seen) copied into alloc's buffer. */
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

/* Under mu: w parked on e's run, or false when it has just finished. */
static bool park_locked(struct replycache_entry *e, struct replycache_waiter *w)
{
	struct replycache_waiter *head = atomic_load_explicit(&e->parked, memory_order_acquire);

	while (head != FINISHED) {
		w->next = head;
		if (atomic_compare_exchange_weak_explicit(
		        &e->parked, &head, w, memory_order_release, memory_order_acquire)) {
			return true;
		}
	}
	return false;
}

enum replycache_verdict replycache_claim(struct replycache *c, const struct replycache_key *k,
                                         struct replycache_waiter *w,
                                         struct replycache_entry **ticket,
                                         void *(*alloc)(size_t, void *), void *alloc_arg,
                                         struct replycache_reply *hit)
{
	unsigned char key[KEY_MAX];
	unsigned char h[crypto_shorthash_BYTES];
	uint64_t hash;
	size_t len;
	int64_t now;
	struct replycache_entry *e;
	enum replycache_verdict v = REPLYCACHE_RUN;

	*ticket = NULL;
	if (c == NULL || k->message_id[0] == '\0') {
		return REPLYCACHE_RUN; /* no key: every copy runs */
	}
	len = make_key(k, key);
	if (len == 0) {
		return REPLYCACHE_RUN;
	}
	crypto_shorthash(h, key, len, c->hash_key);
	memcpy(&hash, h, sizeof(hash));
	now = engine_now();
	pthread_mutex_lock(&c->mu);
	expire_locked(c, now);
	e = find_locked(c, hash, key, len);
	if (e == NULL) {
		*ticket = start_run_locked(c, hash, key, len, now);
	} else if (park_locked(e, w)) {
		v = REPLYCACHE_PARKED;
	} else {
		copy_hit(e, alloc, alloc_arg, hit);
		atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
		v = REPLYCACHE_HIT;
	}
	pthread_mutex_unlock(&c->mu);
	return v;
}

/* len more bytes of bodies, if they fit under the bound. Any thread. */
static bool reserve(struct replycache *c, size_t len)
{
	size_t b = atomic_load_explicit(&c->bytes, memory_order_relaxed);

	do {
		if (len > c->max_bytes - b) {
			return false;
		}
	} while (!atomic_compare_exchange_weak_explicit(
	    &c->bytes, &b, b + len, memory_order_relaxed, memory_order_relaxed));
	return true;
}

/* The oldest replies go until len more bytes fit (reserved); false when
 * they cannot (no reply is left to evict). Takes mu. */
static bool make_bytes(struct replycache *c, size_t len)
{
	struct replycache_entry *oldest;
	bool ok;

	pthread_mutex_lock(&c->mu);
	while (!(ok = reserve(c, len)) && (oldest = oldest_reply_locked(c)) != NULL) {
		remove_locked(c, oldest);
	}
	pthread_mutex_unlock(&c->mu);
	return ok;
}

/* The run's thread, without mu: r copied into e (its bytes reserved,
 * older replies evicted if need be); false when it is larger than the
 * whole bound, no room can be made or it could not be copied. */
static bool keep(struct replycache *c, struct replycache_entry *e, const struct replycache_reply *r)
{
	void *body = NULL;

	if (r->len > c->max_bytes || (!reserve(c, r->len) && !make_bytes(c, r->len))) {
		return false;
	}
	if (r->len > 0) {
		body = r->len <= sizeof(e->small_body) ? e->small_body : malloc(r->len);
		if (body == NULL) {
			atomic_fetch_sub_explicit(&c->bytes, r->len, memory_order_relaxed);
			return false;
		}
		memcpy(body, r->body, r->len);
	}
	e->body = body;
	e->len = r->len;
	e->status = r->status;
	e->format = r->format;
	return true;
}

static void answer_all(struct replycache_waiter *parked, const struct replycache_reply *reply,
                       void (*answer)(struct replycache_waiter *, const struct replycache_reply *,
                                      void *),
                       void *arg)
{
	struct replycache_waiter *next;

	for (; parked != NULL; parked = next) {
		next = parked->next;
		answer(parked, reply, arg);
	}
}

void replycache_finish(
    struct replycache *c, struct replycache_entry *ticket, const struct replycache_reply *reply,
    void (*answer)(struct replycache_waiter *, const struct replycache_reply *, void *), void *arg)
{
	struct replycache_waiter *parked;

	if (c == NULL || ticket == NULL) {
		return;
	}
	if (reply != NULL && keep(c, ticket, reply)) {
		parked = atomic_exchange_explicit(&ticket->parked, FINISHED, memory_order_acq_rel);
		for (struct replycache_waiter *w = parked; w != NULL; w = w->next) {
			atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
		}
		answer_all(parked, reply, answer, arg);
		return;
	}
	/* Nothing kept: the entry goes (under mu, so no twin parks meanwhile),
	 * and its twins are sent back to run alone. */
	pthread_mutex_lock(&c->mu);
	parked = atomic_exchange_explicit(&ticket->parked, NULL, memory_order_acquire);
	remove_locked(c, ticket);
	pthread_mutex_unlock(&c->mu);
	answer_all(parked, NULL, answer, arg);
}

size_t replycache_count(struct replycache *c)
{
	size_t n;

	if (c == NULL) {
		return 0;
	}
	pthread_mutex_lock(&c->mu);
	n = c->count;
	pthread_mutex_unlock(&c->mu);
	return n;
}

size_t replycache_bytes(struct replycache *c)
{
	return c != NULL ? atomic_load(&c->bytes) : 0;
}

uint64_t replycache_hits(struct replycache *c)
{
	return c != NULL ? (uint64_t)atomic_load(&c->hits) : 0;
}
