/* spare.h: a worker's recycled reply buffers (spare.c).
 *
 * Lock rule: the buffers, n and bytes are under mu, the spares' own lock,
 * innermost (nothing else is taken while it is held). Handler threads
 * take buffers to encode replies into; the I/O thread gives them back once
 * published; any thread may call worker_spare_take/_put. spare_init and
 * worker_spare_free run on the owner's thread, before the worker starts
 * and at its end. */
#ifndef WARREN_SPARE_H
#define WARREN_SPARE_H

#include <pthread.h>
#include <stddef.h>

/* Reply buffers of at least WORKER_SPARE_MIN bytes are recycled, up to
 * WORKER_SPARES of them and WORKER_SPARE_BYTES in all. */
#define WORKER_SPARE_MIN   (16 * 1024)
#define WORKER_SPARES      64
#define WORKER_SPARE_BYTES (8 * 1024 * 1024) /* at most, in all */

struct warren_worker;

struct spares {
	pthread_mutex_t mu;
	void *bufs[WORKER_SPARES];
	size_t n, bytes;
};

/* Before the worker starts. */
void spare_init(struct spares *s);
/* A reply buffer of n bytes (alloc for envelope_encode_body_alloc, arg the
 * worker): a spare one large enough, else malloc's. Any thread. */
void *worker_spare_take(size_t n, void *arg);
/* Frees a reply buffer (malloc'd, or from worker_spare_take), or keeps it
 * for worker_spare_take when it is large. Any thread; NULL-safe. */
void worker_spare_put(struct warren_worker *w, void *p);
/* Frees the spare buffers and the lock (the worker's end). */
void worker_spare_free(struct warren_worker *w);

#endif
