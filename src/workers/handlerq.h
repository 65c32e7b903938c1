/* handlerq.h: the handler queue, the jobs the I/O thread hands to the
 * worker's handler threads (DESIGN.md 3: handlers never touch AMQP).
 *
 * Lock rule: q->mu guards jobs and quit, nothing else, and is innermost:
 * no other lock is taken while it is held (a caller may hold the worker's
 * mu around handlerq_take_if, never the other way round). unsignaled is
 * the I/O thread's alone. Threads: the I/O thread pushes (handlerq_push,
 * handlerq_wake at the end of its turn) and takes a lost connection's jobs
 * back (handlerq_take_if); handler threads pop; the owner quits and, with
 * every thread gone, drains. */
#ifndef WARREN_HANDLERQ_H
#define WARREN_HANDLERQ_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/queue.h>

struct job;
TAILQ_HEAD(job_queue, job);

struct handlerq {
	pthread_mutex_t mu;
	pthread_cond_t cond;   /* a job was queued, or quit */
	struct job_queue jobs; /* under mu, oldest first */
	bool quit;             /* under mu: handlers stop popping */
	int unsignaled;        /* I/O thread: pushed this turn, no handler woken yet */
	int threads;           /* the handler threads: a wake for as many is a broadcast */
};

void handlerq_init(struct handlerq *q, int threads);
/* With no thread left on it; the jobs still queued are the caller's
 * (handlerq_take_if first). */
void handlerq_destroy(struct handlerq *q);
/* Queues j. signal: wakes a handler now; otherwise the push is counted
 * and handlerq_wake wakes the handlers (I/O thread only). */
void handlerq_push(struct handlerq *q, struct job *j, bool signal);
/* I/O thread, at the end of its turn: wakes as many handlers as the turn
 * pushed unsignaled, once, rather than at each push (a handler woken by
 * the first would contend for mu with the I/O thread pushing the rest). */
void handlerq_wake(struct handlerq *q);
/* Handler thread: the oldest job, waiting for one; NULL once quit (what is
 * still queued is then never started). */
struct job *handlerq_pop(struct handlerq *q);
/* Ends every handlerq_pop, now and later. */
void handlerq_quit(struct handlerq *q);
/* Moves the queued jobs for which match says true (NULL: all) to the end
 * of out, in order; the others keep theirs. match runs under mu: it must
 * only read the job. */
void handlerq_take_if(struct handlerq *q, bool (*match)(const struct job *, void *), void *arg,
                      struct job_queue *out);

#endif
