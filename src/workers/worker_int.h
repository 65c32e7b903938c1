/* worker_int.h: the worker pool's internals shared by worker.c (lifecycle and
 * the I/O thread's side), job.c (the handler threads' side) and request.c. */
#ifndef WARREN_WORKER_INT_H
#define WARREN_WORKER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/queue.h>

#include "breaker.h"
#include "engine.h"
#include "envelope.h"
#include "handlerq.h"
#include "metrics.h"
#include "replycache.h"
#include "security.h"
#include "spare.h"
#include "timelimit.h"

struct warren_request {
	const struct envelope_meta *meta;
	const warren_value *params;
	bool redelivered;
	void *thread_data;
	warren_value *result;  /* set by the handler (OK) */
	warren_value *details; /* set by the handler (errors) */
	char message[512];
};

/* What the I/O thread does once a job's reply is ready. */
enum job_action {
	JOB_REPLY_THEN_ACK, /* publish the reply; ack when the broker confirms it */
	JOB_DEAD_LETTER,    /* poison: publish it to rpc.dlx with why; once confirmed,
	                     * reply the error (if anyone waits) and ack */
	JOB_RETRY,          /* transient: publish it to a delay tier with rpc-attempt + 1;
	                     * ack once confirmed */
	JOB_DEAD_ANSWER,    /* its dead letter is confirmed: publish the error reply;
	                     * ack once confirmed, or at once if it cannot be sent */
	JOB_ACK,            /* one-way, or expired: nothing to send */
	JOB_PROBE,          /* the breaker's probe: no delivery, nothing to send */
	JOB_MOVE,           /* a crash suspect on the fast lane: publish it to rpc (the
	                     * durable lane) as it came; ack once confirmed */
	JOB_REQUEUE,        /* parked on a twin's run that left no reply to keep
	                     * (replycache.h): back to its queue, judged again alone */
};

struct job {
	struct engine_task task; /* the reply/ack step, queued to the I/O thread */
	TAILQ_ENTRY(job) queued; /* in the handler queue, or a list of stale jobs */
	struct warren_worker *worker;
	struct engine_delivery *delivery; /* NULL for a probe */
	struct envelope_meta meta;
	enum job_action action;
	void *reply_body;
	size_t reply_len;
	int status;
	const char *dead_reason; /* JOB_DEAD_LETTER: a DL_R_* */
	atomic_int refs;         /* 1; 2 while a handler past its limit still runs */
	int run_state;           /* under w->mu: RUN_* */
	int64_t limit_at;        /* engine_now() ms its handler must end by */
	int64_t limit_ms;
	struct signature sig;             /* of the reply, when the worker signs */
	const unsigned char *seal_key;    /* the request came sealed: seal the reply with it */
	char signer[SIGN_KEY_ID_MAX + 1]; /* the request's signer, when the worker checks */
	bool reply_sealed;                /* reply_body is sealed */
	LIST_ENTRY(job) run_link;         /* in w->limits.running (or timelimit_check's overdue) */
	char dead_error[400];
	int64_t retry_delay_ms;  /* JOB_RETRY */
	struct engine_held hold; /* held by the engine while its publish must wait (worker.c) */
	/* I/O thread only. A dead letter or retry published and not yet
	 * confirmed is in w->pending.sent (sent_link, is_sent); returned: the broker
	 * returned it unroutable (basic.return comes before the confirm). */
	LIST_ENTRY(job) sent_link;
	bool is_sent;
	bool returned;
	/* I/O thread only: parked in w->pending.parked after an unroutable dead letter
	 * or retry, published again at park_until; parked_since: the first. */
	LIST_ENTRY(job) park_link;
	int64_t park_until, parked_since, park_backoff;
	bool noted;                  /* its requeue is noted for the crash count (requeue.c) */
	bool on_io_thread;           /* run by worker_start_job: no time limit */
	bool suspect;                /* requeue_suspect: counted in w->careful.suspects */
	bool fast;                   /* it came from the fast lane, rpc.<service>.fast */
	TAILQ_ENTRY(job) reply_link; /* I/O thread: in w->pending.replies, its reply not yet sent */
	struct lane_batch *lane;     /* an entry of this batch of requests (lane.c), or NULL */
	struct replycache_entry *cache_run;  /* the reply cache's run it claimed (job.c), or NULL */
	struct replycache_waiter cache_wait; /* parked on its twin's run (job.c) */
};

/* The lists a job is on (sys/queue.h): the handler queue and the replies
 * (removal from the middle), the running, sent and parked jobs
 * (unordered, removal anywhere). Held publishes are the engine's. */
struct lane_wait;
STAILQ_HEAD(lane_waits, lane_wait);

struct method {
	char *name;
	warren_handler_fn fn;
	void *arg;
	int64_t timeout_ms;            /* 0: worker.handler_timeout */
	bool on_io_thread;             /* warren_worker_handle_inline */
	struct method_metrics metrics; /* under the worker's mu */
};

enum { RUN_WAITING, RUN_RUNNING, RUN_ABANDONED, RUN_DONE };

/* A handler thread's state, under w->mu: a thread still running when a
 * stop's bound passed is left behind (detached) and owns a reference to
 * the worker until it ends. */
enum { THREAD_RUNNING, THREAD_EXITED, THREAD_DETACHED };

/* One request this worker gave back to its queue itself (requeue.c). */
struct requeue_note {
	uint64_t key; /* requeue_key of the delivery; 0: free */
	int count;
};

/* Read from the configuration once, by warren_worker_new, before any
 * thread of the worker runs; read-only after, by any thread. */
struct worker_settings {
	int threads, prefetch;
	size_t max_size;
	char identity[200]; /* rpc-dead-worker: service@host:pid */
	int retry_attempts, crash_limit;
	int64_t retry_delay_ms;
	int64_t consumer_timeout_ms;
};

/* The broker names of the service (wire.h), made by warren_worker_new;
 * read-only after, by any thread. */
struct worker_topology {
	char service[65];
	char queue[80], dlq[84];
	char fast_queue[85];  /* rpc.<service>.fast, the fast lane's classic queue */
	char batch_queue[90]; /* rpc.<service>.batch: batches of requests */
};

/* The registered methods and thread hooks: set by the owner's thread
 * before warren_worker_start, read-only after (each method's
 * method_metrics is under the worker's mu, metrics.h). */
struct worker_methods {
	struct method *list;
	size_t n;
	size_t ninline; /* methods that run on the I/O thread */
	warren_thread_init_fn thread_init;
	warren_thread_fini_fn thread_fini;
	void *thread_arg;
};

/* The consumers of the lanes (worker.c): the I/O thread's alone. */
struct worker_lanes {
	char consumer_tag[256];
	char fast_tag[256];    /* the fast lane's consumer; empty: not consumed */
	int64_t fast_retry_at; /* engine_now() ms of the next try at it */
	char batch_consumer_tag[256];
};

/* Redelivered batches whose entries are republished alone (lane.c): the
 * I/O thread's alone. */
struct lane_splits {
	/* Splits that must wait for room in the socket: in order, published
	 * from the tick (lane_tick). */
	struct lane_waits waiting;
	/* Batches being split: held, as far as draining is concerned, until
	 * acked. */
	int splitting;
};

/* Careful mode: suspects run alone (worker.c, set_careful). The I/O
 * thread's alone, but for suspects, under the worker's mu (the handler
 * threads lower it as a suspect's job ends). on: consuming with prefetch
 * 1; draining: a suspect came while consuming with the full prefetch, the
 * consumer is cancelled and the requests held are finishing; isolated: the
 * suspect kept aside to run alone once they have; drained_ticks: turns
 * seen with none held. */
struct careful {
	bool on, draining;
	unsigned lanes; /* the lanes still consumed with prefetch 1 */
	struct job *isolated;
	int drained_ticks;
	int64_t suspects; /* under mu: jobs of suspects queued or running */
};

/* Jobs whose publish the I/O thread still owes: the I/O thread's alone. */
struct worker_pending {
	/* Replies ready this turn whose callers take batches
	 * (rpc-accept-batch), sent from the tick, batched by reply_to. */
	struct job_queue replies;
	/* Dead letters and retries awaiting their confirm, and those parked
	 * after the broker returned them unroutable. */
	struct job_list sent;
	struct job_list parked;
};

/* The handler threads: ids and started are the owner's thread's
 * (warren_worker_start/_stop/_free); state is under the worker's mu (a
 * handler thread marks its own end). */
struct worker_pool {
	pthread_t *ids;
	int *state; /* THREAD_* of each handler thread */
	int started;
};

/* Requests given back to the queue by this worker (requeue.c): under the
 * worker's mu. */
struct requeue_notes {
	struct requeue_note *list;
	size_t n, next;
};

/* The worker's lifecycle flags. started and stopped: the owner's thread
 * (warren_worker_start/_stop); stopping: the I/O thread's (no more
 * consuming). */
struct worker_life {
	bool started, stopped;
	bool stopping;
};

/* The worker: composed of its parts, each with its lock rule (above, and
 * in the part's header).
 *
 * Locks: the worker's mu guards what the handler threads and the I/O
 * thread share and must see in one step: the stats and metrics, the
 * breaker's counts, the time limits and a job's run_state, the requeue
 * notes, careful.suspects and pool.state. These parts keep no lock of their
 * own by design (metrics.h, breaker.h, timelimit.h say why): each holds
 * mu for a few assignments, and the stats tie them together. Three parts
 * have their own lock: the handler queue's (handlerq.h) and the spares'
 * (spare.h), both innermost, and the reply cache's (replycache.h), taken
 * with no other lock held (it may take the spares' inside it). Lock order:
 * mu or the cache's, then handlers.mu or spares.mu; nothing takes mu while
 * holding another, and no two of the others are held together but the
 * cache's and the spares', so there is no cycle. */
struct warren_worker {
	struct engine *engine; /* set by warren_worker_new */
	struct security *sec;  /* set by warren_worker_new; NULL: nothing signed or checked */
	struct worker_settings settings; /* read-only after warren_worker_new */
	struct worker_topology topo;     /* read-only after warren_worker_new */
	struct worker_methods methods;   /* read-only after warren_worker_start */

	/* The worker's mutex: the in-progress count a stop waits on (stats),
	 * and the parts that say "under mu". */
	pthread_mutex_t mu;
	pthread_cond_t idle_cond; /* in_progress fell */

	struct timelimit limits;       /* handler time limits (timelimit.h) */
	struct breaker breaker;        /* the circuit breaker (breaker.h) */
	struct worker_metrics metrics; /* stats and metrics (metrics.h) */
	struct requeue_notes notes;    /* under mu (requeue.c) */
	struct handlerq handlers;      /* jobs for the handler threads (handlerq.h: its own lock) */
	struct spares spares;          /* recycled reply buffers (spare.h: its own lock) */
	struct replycache
	    *cache; /* replies kept for repeats, NULL: off (replycache.h: its own lock) */

	struct worker_pending pending; /* I/O thread */
	struct worker_lanes lanes;     /* I/O thread */
	struct lane_splits splits;     /* I/O thread (lane.c) */
	struct careful careful;        /* I/O thread; suspects under mu */

	struct worker_pool pool; /* the handler threads */
	struct worker_life life;
	/* The owner's reference plus one per handler thread left behind; the
	 * last one frees the worker (worker_release). */
	atomic_int refs;
};

/* The two transient statuses: retried, and counted by the breaker. */
#define TRANSIENT(status)                                                                          \
	((status) == WARREN_STATUS_UNAVAILABLE || (status) == WARREN_STATUS_RESOURCE_EXHAUSTED)

/* Handler thread: turns a delivery into a job ready for the I/O thread.
 * false when its handler ran past its time limit and the I/O thread has
 * answered for it: the job is then only to be released. */
bool job_process(struct warren_worker *w, struct job *j, void *thread_data);
/* Drops one reference to the job; the last frees it. */
void job_free(struct job *j);
/* Handler time limits (timelimit.c). Handler thread: begin before running
 * the handler, end after (false: abandoned meanwhile). I/O thread: check
 * answers for the handlers past their limit, returns the next limit. */
void timelimit_begin(struct warren_worker *w, struct job *j, const struct method *m);
bool timelimit_end(struct warren_worker *w, struct job *j);
int64_t timelimit_check(struct warren_worker *w, struct engine *e, int64_t now);
/* Seals the job's encoded reply when its request came sealed, then signs it
 * when the worker signs (security.scheme). */
void job_wrap_reply(struct job *j);
/* I/O thread: publishes a dead letter of the job, then replies and acks. */
void worker_dead_letter(struct engine *e, struct job *j);
/* Handler thread: counts a handler's outcome for the breaker; opens it
 * after breaker_threshold transient failures in a row. */
void breaker_record(struct warren_worker *w, int status, const char *message);
/* Handler thread: the probe's outcome; OK closes the breaker. */
void breaker_probed(struct warren_worker *w, int status);
/* I/O thread, every turn: pauses or resumes consuming as the breaker says
 * and queues the probe when due. Returns when it wants to run next. */
int64_t breaker_tick(struct warren_worker *w, struct engine *e, int64_t now);

/* Requeue accounting (requeue.c): a request's crash count is its
 * x-delivery-count less the returns to the queue this worker caused
 * itself, which crashed nothing. */
bool requeue_init(struct warren_worker *w);
/* Notes that d goes back to its queue by this worker's doing (a reject
 * with requeue, a lost connection while it held d). Takes mu; _locked
 * with mu held. Once per job: j->noted. */
void requeue_note(struct warren_worker *w, struct job *j);
void requeue_note_locked(struct warren_worker *w, struct job *j);
/* Handler thread: the deliveries of j that ended with its worker dead
 * (x-delivery-count less the noted returns). Takes mu. */
int requeue_crashes(struct warren_worker *w, const struct job *j);
/* I/O thread: d is a suspect: it was out with a worker process that died
 * (an unexplained delivery count of 1 or more). Takes mu. */
bool requeue_suspect(struct warren_worker *w, const struct engine_delivery *d);
/* I/O thread: whether this worker noted a return of d's request, so that
 * a redelivery of it is no crash (the fast lane, which has no
 * x-delivery-count, asks this). Takes mu. */
bool requeue_noted(struct warren_worker *w, const struct engine_delivery *d);

/* Batches of requests (lane.c). I/O thread: lane_deliver takes a batch
 * delivery and makes a job of each entry (j->lane), or republishes them
 * alone when it comes again; lane_settle counts an entry acked or given
 * back (requeue), and settles the batch with its last. Any thread:
 * lane_release drops an entry job's hold on the batch. */
struct lane_batch;
/* true when the batch's entries run (a first delivery: no suspect). */
bool lane_deliver(struct warren_worker *w, struct engine *e, struct engine_delivery *d);
void lane_settle(struct engine *e, struct lane_batch *lb, bool requeue);
void lane_release(struct lane_batch *lb);
/* From the tick: the waiting splits that the socket now takes go. */
void lane_tick(struct warren_worker *w, struct engine *e);
/* At destruction: the waiting splits are dropped (the broker has their
 * batches back). */
void lane_free(struct warren_worker *w);

/* I/O thread: start and stop consuming the service queue. */
void worker_consume(struct warren_worker *w, struct engine *e);
void worker_cancel_consumer(struct warren_worker *w, struct engine *e);
/* A job for w whose end runs on the I/O thread; NULL when out of memory. */
struct job *worker_job_new(struct warren_worker *w);
/* Hands a job to the handler threads (a probe is not counted as received). */
void worker_enqueue(struct warren_worker *w, struct job *j);
/* I/O thread: runs a delivered request's job now when its method runs on
 * the I/O thread (warren_worker_handle_inline), else queues it for the
 * handler threads, woken at the end of the turn. */
void worker_start_job(struct warren_worker *w, struct engine *e, struct job *j);
const struct method *worker_find_method(const struct warren_worker *w, const char *name);

#endif
