/* timelimit.h: the handler time limits' state (timelimit.c).
 *
 * Lock rule: default_ms is set before the worker starts. running, known
 * and the run_state of the jobs on running are under the worker's mu, by
 * design: a job's run_state is also what a stop and a lost connection
 * decide by (worker.c, with the in-progress count a stop waits on, also
 * under mu), so one lock says whether a job is running, done or
 * abandoned. Handler threads add and remove their job (timelimit_begin,
 * timelimit_end); the I/O thread answers for the overdue ones
 * (timelimit_check, which takes no other lock while it holds mu, and
 * answers for them after releasing it); a lost connection notes the
 * running jobs and a stop abandons them (worker.c). */
#ifndef WARREN_TIMELIMIT_H
#define WARREN_TIMELIMIT_H

#include <stdint.h>
#include <sys/queue.h>

struct job;
LIST_HEAD(job_list, job);

struct timelimit {
	int64_t default_ms;      /* worker.handler_timeout */
	struct job_list running; /* under mu: jobs in a handler */
	int64_t known;           /* under mu: the earliest limit the I/O thread's timer knows */
};

#endif
