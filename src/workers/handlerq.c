/* handlerq.c: the handler queue (see handlerq.h for its lock rule). */
#include "handlerq.h"
#include "worker_int.h"

void handlerq_init(struct handlerq *q, int threads)
{
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cond, NULL);
	TAILQ_INIT(&q->jobs);
	q->quit = false;
	q->unsignaled = 0;
	q->threads = threads;
}

void handlerq_destroy(struct handlerq *q)
{
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->mu);
}

void handlerq_push(struct handlerq *q, struct job *j, bool signal)
{
	pthread_mutex_lock(&q->mu);
	TAILQ_INSERT_TAIL(&q->jobs, j, queued);
	if (signal) {
		pthread_cond_signal(&q->cond);
	}
	pthread_mutex_unlock(&q->mu);
	if (!signal) {
		q->unsignaled++;
	}
}

void handlerq_wake(struct handlerq *q)
{
	int n = q->unsignaled;

	q->unsignaled = 0;
	if (n >= q->threads) {
		pthread_cond_broadcast(&q->cond);
	} else {
		while (n-- > 0) {
			pthread_cond_signal(&q->cond);
		}
	}
}

struct job *handlerq_pop(struct handlerq *q)
{
	struct job *j;

	pthread_mutex_lock(&q->mu);
	while (TAILQ_EMPTY(&q->jobs) && !q->quit) {
		pthread_cond_wait(&q->cond, &q->mu);
	}
	j = q->quit ? NULL : TAILQ_FIRST(&q->jobs);
	if (j != NULL) {
		TAILQ_REMOVE(&q->jobs, j, queued);
	}
	pthread_mutex_unlock(&q->mu);
	return j;
}

void handlerq_quit(struct handlerq *q)
{
	pthread_mutex_lock(&q->mu);
	q->quit = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->mu);
}

void handlerq_take_if(struct handlerq *q, bool (*match)(const struct job *, void *), void *arg,
                      struct job_queue *out)
{
	struct job *j, *next;

	pthread_mutex_lock(&q->mu);
	for (j = TAILQ_FIRST(&q->jobs); j != NULL; j = next) {
		next = TAILQ_NEXT(j, queued);
		if (match == NULL || match(j, arg)) {
			TAILQ_REMOVE(&q->jobs, j, queued);
			TAILQ_INSERT_TAIL(out, j, queued);
		}
	}
	pthread_mutex_unlock(&q->mu);
}
