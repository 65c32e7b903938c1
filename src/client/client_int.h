/* client_int.h: the caller side's internals shared by client.c (lifecycle),
 * client_request.c (building requests), client_publish.c (publishing and
 * republishing), client_batch.c (batches of requests) and client_reply.c
 * (the reply path). Everything declared here runs on the engine's I/O
 * thread unless it says otherwise. */
#ifndef WARREN_CLIENT_INT_H
#define WARREN_CLIENT_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <sodium.h>

#include "backoff.h"
#include "batch.h"
#include "client_metrics.h"
#include "config.h"
#include "engine.h"
#include "envelope.h"
#include "fastrand.h"
#include "lanes.h"
#include "log.h"
#include "pending.h"
#include "reply.h"
#include "patterns.h"
#include "seal.h"
#include "security.h"
#include "trace.h"

enum reply_mode { REPLY_DIRECT, REPLY_QUEUE };

/* What is needed only until the request is published. */
struct outgoing {
	struct envelope_meta meta;
	void *body;
	size_t len;
	struct signature sig; /* when the client signs (security.scheme) */
};

struct call {
	struct engine_task task;    /* the publish, queued to the I/O thread */
	struct pending_entry entry; /* in the table from publish to its end */
	struct pending_entry retry; /* in c->retries while waiting to be published again */
	struct warren_client *client;
	struct outgoing *out;          /* freed once published */
	const unsigned char *seal_key; /* security.encrypt: seals the request, opens the reply */
	warren_done_fn done;
	void *arg;
	int64_t timeout_ms;
	/* Publishes tried so far, republishes included: the back-off and
	 * client.retry_attempts count these. A republish is the same attempt
	 * of the same call, so rpc-attempt stays 1 (warren(7)). */
	int tries;
	bool one_way;
	bool in_table;
	bool awaiting_confirm; /* the engine holds a pointer to this call */
	bool finished;         /* done has run */
	bool waiting_retry;    /* in c->retries */
	bool returned;         /* basic.return came for the current publish */
	bool fast;             /* transient: sent on the fast lane while it has a queue */
	bool on_fast;          /* the current publish went to rpc.fast */
	/* client.resend names its method: its request is kept until the call
	 * ends, to be sent again when the reply path is lost after the
	 * broker confirmed it. */
	bool resend;
	bool sent;      /* published at least once: a later publish is signed afresh */
	bool resending; /* confirmed before a lost connection, held to be sent again */
	/* Held by the engine while its publish cannot be made (hold.on), since
	 * hold.since: not connected, blocked, or no room in the socket. The
	 * deadline ends it; client.blocked_timeout, when set, a blocked one. */
	struct engine_held hold;
	/* Its method's metrics (NULL: client.metrics_listen is off), and when it began. */
	struct client_method *metrics;
	struct timespec started;
	/* Queued this turn to go in a batch of requests (c->outq), the engine
	 * as good as holding it: awaiting_confirm is set meanwhile. */
	TAILQ_ENTRY(call) out_link; /* in c->outq, then in flush_requests' list */
};

TAILQ_HEAD(call_tailq, call);

struct req_batch;

LIST_HEAD(req_batches, req_batch);

/* A service whose fast lane returned a request (no queue bound to rpc.fast
 * for it): its transient calls take the durable lane for LANE_DOWN_MS. */
#define LANE_DOWN_SLOTS 16

#define LANE_DOWN_MS 30000

/* A service whose batch lane was found missing: singles for LANE_OFF_MS. */
#define LANE_OFF_SLOTS 64

#define LANE_OFF_MS 30000

struct warren_client {
	struct engine *engine;
	struct pending table;   /* I/O thread only */
	struct security *sec;   /* NULL: nothing signed */
	struct pending retries; /* calls waiting to be published again, by due time */
	int retry_attempts;
	int64_t retry_delay_ms;
	int64_t blocked_timeout_ms;
	int64_t blocked_since; /* engine_now() when the tick first saw the block; 0: not blocked */
	int64_t lost_since;    /* engine_now() when the connection was lost; 0: connected */
	int64_t up_since;      /* engine_now() when the connection (and its setup) came up */
	enum reply_mode reply_mode;
	char reply_queue[128];
	char prefix[17]; /* this client's half of every correlation id */
	char app_id[128];
	char *transient; /* client.transient: methods sent with delivery_mode 1 */
	/* I/O thread only: rpc.fast exists (checked at each connection), and
	 * the services whose fast lane was found missing lately. */
	bool fast_exchange;
	struct lanes down;
	struct lanes_slot down_slot[LANE_DOWN_SLOTS];
	bool batch_replies; /* client.batch_replies: requests offer rpc-accept-batch */
	char *batch;        /* client.batch: methods whose requests may go batched */
	char *resend;       /* client.resend: methods whose calls are sent again after a loss */
	/* I/O thread only: requests queued this turn for a batch, batches
	 * published and not yet confirmed, services without a batch lane. */
	struct call_tailq outq;
	struct req_batches batches;
	uint64_t batch_seq;
	struct lanes lane_off;
	struct lanes_slot lane_off_slot[LANE_OFF_SLOTS];
	int64_t default_timeout_ms;
	size_t max_size;
	atomic_bool closing; /* set by warren_client_free, read on the I/O thread */
	bool first_connect_done;

	pthread_mutex_t stats_mu;
	warren_client_stats stats;
	struct client_metrics metrics; /* its own lock */
};

/* Calls gathered from the table before ending them (ending reshapes it). */
struct collect {
	struct call **calls;
	size_t *n;
	bool all;
};

#define STAT_ADD(c, field, n)                                                                      \
	do {                                                                                       \
		pthread_mutex_lock(&(c)->stats_mu);                                                \
		(c)->stats.field += (n);                                                           \
		pthread_mutex_unlock(&(c)->stats_mu);                                              \
	} while (0)

/* Durable requests for the same service queued in one turn of the I/O
 * thread go as one batch (warren(7) BATCHES) on the lane of batches,
 * rpc.batch, which only workers that take batches consume: a worker that
 * does not take them never sees one. A batch that no queue takes (no
 * such worker ever declared the lane) comes back, and its requests go
 * alone at once; that service then gets singles for LANE_OFF_MS. */
struct req_batch {
	LIST_ENTRY(req_batch) link; /* in c->batches once published */
	bool listed;
	warren_client *c;
	char id[32]; /* its correlation_id: a basic.return names it */
	char service[65];
	bool fast; /* transient requests, to rpc.fast; else to rpc.batch */
	bool returned;
	size_t n;
	struct call *calls[];
};

/* client.c */
/* The one terminal path: leaves the table, runs done, frees the call unless
 * the engine still holds it for a confirm. */
void client_finish(struct call *call, warren_err err, warren_reply *reply, const char *fmt, ...)
    WARREN_PRINTF(4, 5);
void client_call_release(struct call *call);

/* client_request.c */
void client_random_hex(char *dst, size_t nbytes);
warren_err client_start_call(warren_client *c, const char *method, const warren_value *params,
                             const warren_call_opts *opts, bool one_way, warren_done_fn done,
                             void *arg, char *errstr, size_t errlen);

/* client_publish.c */
void client_release_call(struct engine *e, struct engine_held *h);
void client_hold(warren_client *c, struct call *call);
void client_await_connection(warren_client *c, struct call *call);
void client_timeout(warren_client *c, struct engine *e, struct call *call);
void client_note_sent(warren_client *c, struct call *call);
void client_note_blocked(warren_client *c, struct engine *e, int64_t now);
int64_t client_blocked_due(const warren_client *c, struct engine *e, int64_t since);
void client_retry_or_finish(struct call *call, warren_err err, const char *what);
void client_on_confirm(struct engine *e, void *ctx, enum engine_confirm outcome);
bool client_lane_fast(warren_client *c, const struct call *call, int64_t now);
bool client_fall_back(warren_client *c, struct call *call);
void client_publish_one(warren_client *c, struct engine *e, struct call *call);
void client_publish_task(struct engine *e, struct engine_task *t);
void client_expire_held(warren_client *c, struct engine *e, int64_t now);
void client_republish_due(warren_client *c, struct engine *e, int64_t now);
void client_returned(struct engine *e, void *arg, const amqp_basic_properties_t *props, int code,
                     const char *text);

/* client_batch.c */
bool client_batchable(warren_client *c, const struct call *call);
void client_queue_request(warren_client *c, struct call *call);
void client_flush_requests(warren_client *c, struct engine *e);
void client_drop_queued(warren_client *c);

/* client_reply.c */
void client_deliver(struct engine *e, void *arg, struct engine_delivery *d);

#endif
