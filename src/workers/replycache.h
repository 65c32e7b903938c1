/* replycache.h: a worker's reply cache. The encoded reply of each finished
 * request, keyed by its caller's identity and message_id, kept for a time
 * (worker.reply_cache_ttl) within a count (worker.reply_cache_size), so that
 * a repeated request (the same method) is answered from memory and its
 * handler does not run again; a repeat that comes while its twin still
 * runs waits for that run. One cache per worker: per process.
 *
 * Lock rule: the cache has its own mutex, taken with no other lock held
 * (the alloc callback of replycache_claim runs under it); any thread may
 * call every function (a handler thread claims and finishes; the I/O
 * thread claims for methods run inline). A claim takes the mutex once; a
 * run's end that keeps its reply takes it only to evict for room in bytes.
 * The answer callback of replycache_finish runs on the finishing thread
 * without the mutex. */
#ifndef WARREN_REPLYCACHE_H
#define WARREN_REPLYCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a request is known by: who sent it (the signer's key id when
 * signatures are checked, else its app_id: the two never match each
 * other), its message_id, and its method. Strings the caller owns. */
struct replycache_key {
	bool signer; /* caller is a signer's key id, not an app_id */
	const char *caller;
	const char *message_id;
	const char *method;
};

/* A request parked on the run of its twin: embedded in the caller's job. */
struct replycache_waiter {
	struct replycache_waiter *next; /* owned by the cache while parked */
};

/* A reply as the cache keeps it: encoded, neither sealed nor signed (that
 * is done per request: the signature covers the correlation id). */
struct replycache_reply {
	int status; /* the rpc-status it answered */
	int format; /* enum envelope_format of body */
	const void *body;
	size_t len;
};

enum replycache_verdict {
	REPLYCACHE_RUN,    /* run its handler; then replycache_finish(*ticket) */
	REPLYCACHE_HIT,    /* answered from the cache: *hit holds a copy */
	REPLYCACHE_PARKED, /* its twin runs: the waiter is answered when it finishes */
};

struct replycache;
struct replycache_entry;

/* A cache of at most size replies and max_bytes of their bodies in all,
 * kept ttl_ms each. size 0: *out is NULL, the cache off (every function
 * takes a NULL cache). 0, or -1 when out of memory. */
int replycache_new(struct replycache **out, size_t size, size_t max_bytes, int64_t ttl_ms);
/* Frees the cache and its replies; drop is called for any request still
 * parked (none when every run finished). NULL-safe. */
void replycache_free(struct replycache *c, void (*drop)(struct replycache_waiter *, void *),
                     void *arg);

/* Looks up k: the method too, so that a message_id reused for another
 * method is never answered with the other's reply (the service judges it,
 * as user-service refuses it). Absent: a running entry is made and
 * *ticket names it (NULL when nothing is kept: no message_id, the cache
 * off, full of running entries, or a key longer than 512 bytes, which the
 * envelope's bounds rule out); replycache_finish must follow the run,
 * ticket NULL or not. Cached: *hit gets the reply, its body copied into
 * alloc(len, alloc_arg) (the caller owns it; NULL body when alloc failed,
 * or len is 0). Running: w is parked on the run and the caller must no
 * longer touch what holds it until the answer callback has it. */
enum replycache_verdict replycache_claim(struct replycache *c, const struct replycache_key *k,
                                         struct replycache_waiter *w,
                                         struct replycache_entry **ticket,
                                         void *(*alloc)(size_t, void *), void *alloc_arg,
                                         struct replycache_reply *hit);
/* The run of ticket ended. reply: its reply, kept (copied) for the next
 * repeats; NULL: nothing to keep (the entry goes). answer is then called,
 * without the cache's mutex, for every request parked on the run, with
 * reply (which the callback must copy) or NULL. ticket NULL: nothing. */
void replycache_finish(
    struct replycache *c, struct replycache_entry *ticket, const struct replycache_reply *reply,
    void (*answer)(struct replycache_waiter *, const struct replycache_reply *, void *), void *arg);

/* The replies and runs held now, the bytes of their bodies, and the
 * requests answered from the cache (hits and parked twins answered) since
 * it was made. */
size_t replycache_count(struct replycache *c);
size_t replycache_bytes(struct replycache *c);
uint64_t replycache_hits(struct replycache *c);

#endif
