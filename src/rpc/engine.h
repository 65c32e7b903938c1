/* engine.h: the connection engine. One I/O thread owns one rabbitmq-c
 * connection and alone touches it: frames, heartbeats, publishes, publisher
 * confirms, acks, reconnects. Other threads hand it tasks through a queue and
 * a wake-up eventfd. The client and the worker pool are both built on it. */
#ifndef WARREN_ENGINE_H
#define WARREN_ENGINE_H

#include <amqp.h>
#include <amqp_framing.h>
#include <sys/queue.h>

#include "connect.h"
#include "warren.h"

struct engine;

/* A unit of work run on the I/O thread. Embedded in the submitter's own
 * struct, so submitting never allocates. */
struct engine_task {
	STAILQ_ENTRY(engine_task) link; /* in the engine's queue of tasks */
	void (*run)(struct engine *e, struct engine_task *t);
};

/* The outcome of a publish, as the broker's confirm (or its absence) says. */
enum engine_confirm { ENGINE_ACK, ENGINE_NACK, ENGINE_LOST };

/* Runs on the I/O thread when the broker confirms (or the connection dies). */
typedef void (*engine_confirm_fn)(struct engine *e, void *ctx, enum engine_confirm outcome);

/* A delivery handed to the owner; the owner takes it and must call
 * engine_delivery_free (from any thread). */
struct engine_delivery {
	uint64_t delivery_tag;
	uint64_t generation; /* connection it came on (acks only make sense there) */
	bool redelivered;
	char routing_key[256];
	char consumer_tag[128]; /* of the consumer it came to (a worker has two) */
	amqp_message_t message; /* properties (own pool) and body (malloc) */
	uint64_t body_size;     /* as its content header announced it */
	bool too_large;         /* body_size > engine_config.max_body: the body was read
	                         * off the socket and dropped (message.body is empty) */
};
void engine_delivery_free(struct engine_delivery *d);

/* What the owner does at each event; all run on the I/O thread. */
struct engine_hooks {
	void *arg;
	/* After login, channel 1 open and confirm.select: declare, qos, consume.
	 * Non-zero (with errstr set) drops the connection and retries later. */
	int (*setup)(struct engine *e, void *arg, char *errstr, size_t errlen);
	/* A basic.deliver, taken by the owner. */
	void (*deliver)(struct engine *e, void *arg, struct engine_delivery *d);
	/* A basic.return of a mandatory publish (its confirm still follows). */
	void (*returned)(struct engine *e, void *arg, const amqp_basic_properties_t *props,
	                 int reply_code, const char *reply_text);
	/* The connection is gone (after every pending confirm got ENGINE_LOST). */
	void (*lost)(struct engine *e, void *arg, const char *why);
	/* The broker cancelled a consumer of channel 1 (its queue deleted, or
	 * its node gone). true: the owner carries on without it; false, or no
	 * hook: the connection is dropped and set up again. */
	bool (*cancelled)(struct engine *e, void *arg, const char *consumer_tag);
	/* Timers: called every loop turn with the monotonic clock; returns the
	 * next monotonic ms it wants to run at, or INT64_MAX. */
	int64_t (*tick)(struct engine *e, void *arg, int64_t now);
};

struct engine_config {
	/* The URL list, login, TLS, heartbeat and connect timeout (connect.h);
	 * the engine asks for the capabilities whatever broker.capabilities says. */
	struct connect_config broker;
	int64_t reconnect_min_ms, reconnect_max_ms;
	/* Every delivery is acked or rejected by engine_ack/engine_reject (a
	 * consumer with manual acks): the engine then tracks them, and the acks
	 * of a loop turn go out at its end, merged with multiple=1 as far as
	 * delivery order allows. */
	bool batch_acks;
	/* A delivery whose content header announces a body larger than this is
	 * handed over without its body (engine_delivery.too_large), which is
	 * never assembled; 0: no limit. */
	size_t max_body;
};

/* The broker.* keys of cfg; name is the connection's name. Points into
 * cfg, which must outlive engine_new. */
struct engine_config engine_config_of(const warren_config *cfg, const char *name);

/* Creates an engine (not started). NULL with errstr on bad URLs or password file. */
struct engine *engine_new(const struct engine_config *cfg, const struct engine_hooks *hooks,
                          char *errstr, size_t errlen);
/* Starts the I/O thread and waits up to connect_timeout for the first
 * connection (setup included). WARREN_ERR_TRANSPORT with the last reason if
 * it did not come up; the thread is then stopped again. */
warren_err engine_start(struct engine *e, char *errstr, size_t errlen);
/* Stops the thread: pending confirms get ENGINE_LOST, hooks.lost runs with
 * "shut down", the connection is closed. Idempotent. Not from the I/O thread. */
void engine_stop(struct engine *e);
void engine_free(struct engine *e); /* stops first; NULL-safe */

/* Turns of the I/O thread's loop so far (thread-safe): a watchdog sees the
 * thread alive while this grows. */
uint64_t engine_turns(struct engine *e);

/* I/O thread: while the broker has this connection blocked (connection.blocked,
 * a memory or disk alarm), the reason it gave; otherwise NULL. Publishes
 * wait meanwhile (engine_must_hold): a publish would stop the broker
 * reading the connection at all. */
const char *engine_blocked(const struct engine *e);

/* A publish held by the engine until it can be made: embedded in the
 * owner's struct (holding never allocates), set up by the owner (len,
 * release), linked by the engine. I/O thread only. */
struct engine_held {
	TAILQ_ENTRY(engine_held) link; /* the engine's */
	bool on;                       /* in the engine's queue (read-only for the owner) */
	size_t len;                    /* the bytes its publish writes: engine_writable's measure */
	int64_t since;                 /* engine_now() when first held (0: never); kept when held
	                                * again, the owner's to reset */
	/* The engine's go-ahead: h is out of the queue and the connection is
	 * up, unblocked, and takes h->len bytes; the owner publishes now (an
	 * engine_must_hold asked from inside says no unless blocked or full). */
	void (*release)(struct engine *e, struct engine_held *h);
};

/* I/O thread: whether a publish of len bytes must be held (engine_hold)
 * rather than made now: the broker blocks the connection, the socket has
 * no room for it (a write would stop this thread, see engine_writable), or
 * publishes are held already (they go first: held publishes keep their
 * order). Not connected and none held: false (engine_publish then fails
 * at once). */
bool engine_must_hold(struct engine *e, size_t len);
/* I/O thread: holds h at the end of the queue. Every turn, before the
 * owner's tick, the engine releases held publishes from the head, in the
 * order held, while the connection is up, unblocked, and has room for the
 * head's len; the rest wait for a later turn. Held publishes survive a
 * lost connection: the owner drops those it no longer wants. */
void engine_hold(struct engine *e, struct engine_held *h);
/* I/O thread: takes h out of the queue (the owner gave up on it); nothing
 * when it is not held. */
void engine_unhold(struct engine *e, struct engine_held *h);
/* I/O thread: the oldest held publish and the one after h (NULL at the
 * end), for the owner's walk over its held publishes (expiry, a lost
 * connection); engine_unhold of the one visited is allowed. */
struct engine_held *engine_held_first(struct engine *e);
struct engine_held *engine_held_next(struct engine *e, struct engine_held *h);
/* Any thread: the time blocks have lasted so far (ended ones; ms). */
int64_t engine_blocked_ms(struct engine *e);

/* Hands t to the I/O thread. Thread-safe. Returns false (and t will not run)
 * once the engine is stopping. */
bool engine_submit(struct engine *e, struct engine_task *t);

/* ---- I/O thread only ---- */

/* Publishes on channel 1. With fn, the broker's confirm is reported to it;
 * otherwise the confirm is ignored. WARREN_ERR_TRANSPORT when not connected or
 * the write failed (fn is then not called). */
warren_err engine_publish(struct engine *e, const char *exchange, const char *routing_key,
                          bool mandatory, const amqp_basic_properties_t *props, const void *body,
                          size_t len, engine_confirm_fn fn, void *ctx);
/* Whether a publish of a len-byte body can be written now without the
 * I/O thread blocking in the write (the broker reads the connection slower
 * than it is written, or not at all). When not, the owner holds the
 * message and asks again from its tick, which the loop then runs at least
 * every 10 ms. True when not connected (engine_publish then fails). */
bool engine_writable(struct engine *e, size_t len);
/* Acks or rejects a delivery of the current generation; a delivery from an
 * older connection is silently skipped (the broker requeued it already).
 * With batch_acks an ack is sent at the end of the loop turn (or before a
 * graceful close), one basic.ack with multiple=1 covering every delivery
 * settled up to the oldest one still unsettled, single acks beyond it;
 * a reject is sent at once. */
void engine_ack(struct engine *e, uint64_t generation, uint64_t tag);
void engine_reject(struct engine *e, uint64_t generation, uint64_t tag, bool requeue);
/* The connection, for setup's declares. */
amqp_connection_state_t engine_conn(struct engine *e);
bool engine_connected(const struct engine *e);
uint64_t engine_generation(const struct engine *e);
/* Wakes the loop so tick runs again soon (thread-safe). */
void engine_wake(struct engine *e);
/* Drops the connection (it reconnects after back-off). */
void engine_fail(struct engine *e, const char *why);

/* Monotonic milliseconds. */
int64_t engine_now(void);

/* The start of warren_client_new and warren_worker_new: args_ok says their
 * required arguments were given (else WARREN_ERR_INVALID); then what the
 * process needs once before any engine (libsodium's random numbers). Safe
 * to call again and from several threads. */
warren_err engine_global_init(bool args_ok, char *errstr, size_t errlen);

#endif
