/* spare.c: a worker's recycled reply buffers (spare.h: its lock rule).
 *
 * Large replies are recycled rather than freed and allocated again. On
 * glibc a burst of them grows the handler thread's arena, their frees (on
 * the I/O thread, once published) leave its top free and glibc gives it
 * back to the kernel, and the next burst faults every page in again: 10-11
 * page faults per call at 64 KiB, 128 in flight (tests/bench/PROFILE.md).
 * What is kept is what the last burst needed, within WORKER_SPARE_BYTES. */
#include <malloc.h>
#include <stdlib.h>

#include "worker_int.h"

void spare_init(struct spares *s)
{
	pthread_mutex_init(&s->mu, NULL);
	s->n = 0;
	s->bytes = 0;
}

void *worker_spare_take(size_t n, void *arg)
{
	struct spares *s = &((struct warren_worker *)arg)->spares;
	void *p = NULL;

	if (n >= WORKER_SPARE_MIN) {
		pthread_mutex_lock(&s->mu);
		for (size_t i = s->n; i-- > 0;) {
			size_t size = malloc_usable_size(s->bufs[i]);

			if (size >= n) {
				p = s->bufs[i];
				s->bufs[i] = s->bufs[--s->n];
				s->bytes -= size;
				break;
			}
		}
		pthread_mutex_unlock(&s->mu);
	}
	return p != NULL ? p : malloc(n);
}

void worker_spare_put(struct warren_worker *w, void *p)
{
	struct spares *s = &w->spares;
	size_t size = p != NULL ? malloc_usable_size(p) : 0;

	if (size >= WORKER_SPARE_MIN) {
		pthread_mutex_lock(&s->mu);
		if (s->n < WORKER_SPARES && s->bytes + size <= WORKER_SPARE_BYTES) {
			s->bufs[s->n++] = p;
			s->bytes += size;
			p = NULL;
		}
		pthread_mutex_unlock(&s->mu);
	}
	free(p);
}

void worker_spare_free(struct warren_worker *w)
{
	struct spares *s = &w->spares;

	for (size_t i = 0; i < s->n; i++) {
		free(s->bufs[i]);
	}
	s->n = 0;
	s->bytes = 0;
	pthread_mutex_destroy(&s->mu);
}
