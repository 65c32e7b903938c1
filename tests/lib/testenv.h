/* testenv.h: what integration tests share: the private broker started by
 * scripts/run-tests.sh (WARREN_TEST_URL), worker processes to start and
 * stop, and a raw rabbitmq-c connection to play a plain AMQP client. */
#ifndef WARREN_TESTENV_H
#define WARREN_TESTENV_H

#include <sys/types.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "warren.h"

/* The broker URL; aborts the test program when the variable is missing. */
const char *testenv_url(void);
/* A config pointing at the test broker, with optional overrides (NULL-ended). */
warren_config *testenv_config(const char *const *overrides);
int64_t testenv_mono_ms(void);

/* Starts $WARREN_BIN/PROGRAM with -o broker.url=... and extra args
 * (NULL-ended), and waits (up to 10 s) until a call of probe (with params
 * probe_json) gets any reply; probe NULL: no wait. */
pid_t testenv_spawn_probe(const char *program, const char *const *args, const char *probe,
                          const char *probe_json);
/* The same, probing example.echo when wait is true. */
pid_t testenv_spawn(const char *program, const char *const *args, bool wait);
/* The private PostgreSQL's connection string ($WARREN_TEST_DB); aborts when unset. */
const char *testenv_db(void);
/* Sends sig and waits for the exit; returns the exit status (or 128+signal). */
int testenv_stop(pid_t pid, int sig);

/* A plain AMQP client. */
struct raw;
struct raw *raw_connect(void);
void raw_close(struct raw *r);
/* Consumes amq.rabbitmq.reply-to on the raw channel (no-ack). */
int raw_consume_replies(struct raw *r);
/* Publishes to exchange rpc (confirmed); 0 on success. */
int raw_publish(struct raw *r, const char *routing_key, const amqp_basic_properties_t *p,
                const void *body, size_t len);
/* The same to any exchange (rpc.fast, the default exchange ""). */
int raw_publish_to(struct raw *r, const char *exchange, const char *routing_key,
                   const amqp_basic_properties_t *p, const void *body, size_t len);
/* Waits for one delivery; 0 with *env filled (caller destroys), -1 on timeout. */
int raw_wait(struct raw *r, int timeout_ms, amqp_envelope_t *env);
/* The raw connection (channel 1), for declares a test needs. */
amqp_connection_state_t raw_conn(struct raw *r);
/* Ready messages in a queue (-1 on error); purge empties it. */
long raw_queue_count(struct raw *r, const char *queue);
/* Takes (and acks) the first message of queue into *msg (destroy it with
 * amqp_destroy_message); -1 when the queue is empty or on error. */
int raw_get(struct raw *r, const char *queue, amqp_message_t *msg);
/* A header's value as text (strings and integers), or NULL when absent.
 * Points into a static buffer. */
const char *raw_header(const amqp_basic_properties_t *p, const char *key);
/* Runs rabbitmqctl ARGS against the private broker; its exit status. */
int testenv_broker_ctl(const char *args);
/* Writes key (len bytes) as one line of hex to DIR/NAME with mode, as
 * warren-key does; aborts on failure. */
void testenv_write_key(const char *dir, const char *name, const unsigned char *key, size_t len,
                       mode_t mode);
/* Freezes the private broker (SIGSTOP: it stops reading its connections);
 * a guard process resumes it after 60 s whatever becomes of the caller, so
 * that later tests of the run still have a broker. Aborts when the broker's
 * pid cannot be read. testenv_broker_thaw resumes it now (also safe when
 * it is not frozen: call it from a teardown). */
void testenv_broker_freeze(void);
void testenv_broker_thaw(void);
/* Consumers of a queue, or -1. */
long raw_consumer_count(struct raw *r, const char *queue);
int raw_purge(struct raw *r, const char *queue);
/* Polls raw_queue_count until it equals want or timeout_ms passes; returns the last count. */
long raw_await_count(struct raw *r, const char *queue, long want, int timeout_ms);
/* Takes the first message of queue without acking it: its delivery tag (r
 * holds the message until it rejects it or closes), or 0 when the queue is
 * empty or on error. */
uint64_t raw_take(struct raw *r, const char *queue);
/* Declares rpc.<service> as a quorum queue bound to rpc by <service>.#, as
 * a worker of a version without the fast lane or batches would, and empties
 * it; 0, or -1. */
int raw_declare_service(struct raw *r, const char *service);

/* A worker for method with cfg, started: NULL (with why printed) when it
 * cannot be. testenv_worker_stop stops it (5 s at most) and frees it;
 * warren_worker_stop's result. */
warren_worker *testenv_worker_start(const warren_config *cfg, const char *method,
                                    warren_handler_fn fn, void *arg);
warren_err testenv_worker_stop(warren_worker *w);

#endif
