/* warren.h: the public API of libwarren, request-reply RPC over RabbitMQ.
 *
 * Conventions for every function below:
 * - Ownership: "takes" means the callee owns the argument afterwards, even
 *   when it fails; everything else stays the caller's.
 * - errstr/errlen: optional (NULL/0); on failure a one-line, human-readable
 *   reason is written there, NUL-terminated and truncated to errlen.
 * - Errors are returned as warren_err, never through errno.
 */
#ifndef WARREN_H
#define WARREN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WARREN_VERSION "0.1.0"

#if defined(__GNUC__)
#define WARREN_API __attribute__((visibility("default")))
#define WARREN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define WARREN_API
#define WARREN_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------ errors */

/* Local error classes. The numbers are part of the ABI: never renumbered. */
typedef enum warren_err {
	WARREN_OK = 0,
	WARREN_ERR_INVALID = 1,    /* a bad argument or bad input from the caller */
	WARREN_ERR_NOMEM = 2,      /* out of memory */
	WARREN_ERR_CONFIG = 3,     /* a bad configuration key, value or file */
	WARREN_ERR_DECODE = 4,     /* a message that cannot be decoded */
	WARREN_ERR_TRANSPORT = 5,  /* the broker cannot be reached, or the connection was lost */
	WARREN_ERR_BROKER = 6,     /* the broker refused (nack, channel or connection close) */
	WARREN_ERR_UNROUTABLE = 7, /* no queue is bound for the method (basic.return) */
	WARREN_ERR_TIMEOUT = 8,    /* the call's deadline passed */
	WARREN_ERR_REMOTE = 9,     /* the service answered with a status other than OK */
	WARREN_ERR_FULL = 10,      /* a bounded table or queue is full */
	WARREN_ERR_CLOSED = 11,    /* the client or worker is shutting down */
	WARREN_ERR_SYSTEM = 12,    /* an operating-system call failed */
} warren_err;

/* A static, lower-case description ("deadline exceeded"). Never NULL. */
WARREN_API const char *warren_err_str(warren_err err);

/* gRPC status codes, carried in a reply's rpc-status header. */
typedef enum warren_status {
	WARREN_STATUS_OK = 0,
	WARREN_STATUS_CANCELLED = 1,
	WARREN_STATUS_UNKNOWN = 2,
	WARREN_STATUS_INVALID_ARGUMENT = 3,
	WARREN_STATUS_DEADLINE_EXCEEDED = 4,
	WARREN_STATUS_NOT_FOUND = 5,
	WARREN_STATUS_ALREADY_EXISTS = 6,
	WARREN_STATUS_PERMISSION_DENIED = 7,
	WARREN_STATUS_RESOURCE_EXHAUSTED = 8,
	WARREN_STATUS_FAILED_PRECONDITION = 9,
	WARREN_STATUS_ABORTED = 10,
	WARREN_STATUS_OUT_OF_RANGE = 11,
	WARREN_STATUS_UNIMPLEMENTED = 12,
	WARREN_STATUS_INTERNAL = 13,
	WARREN_STATUS_UNAVAILABLE = 14,
	WARREN_STATUS_DATA_LOSS = 15,
	WARREN_STATUS_UNAUTHENTICATED = 16,
} warren_status;

/* "NOT_FOUND" for WARREN_STATUS_NOT_FOUND; "UNKNOWN" for a number out of range. */
WARREN_API const char *warren_status_name(int status);
/* Parses "NOT_FOUND" into *out; WARREN_ERR_INVALID for an unknown name. */
WARREN_API warren_err warren_status_parse(const char *name, warren_status *out);
/* The status a caller sees for a local error (TIMEOUT -> DEADLINE_EXCEEDED...). */
WARREN_API warren_status warren_err_status(warren_err err);

/* ------------------------------------------------------------------ values */

/* A decoded message body: the common model of msgpack and JSON. A value is a
 * tree; a container owns its children. Constructors return NULL when out of
 * memory, and the container setters accept NULL (returning WARREN_ERR_NOMEM),
 * so builders can nest calls without checking each one. */
typedef struct warren_value warren_value;

typedef enum warren_type {
	WARREN_NIL = 0,
	WARREN_BOOL = 1,
	WARREN_INT = 2,   /* int64 */
	WARREN_FLOAT = 3, /* double */
	WARREN_STR = 4,   /* UTF-8, may hold NUL bytes; always NUL-terminated too */
	WARREN_BIN = 5,   /* bytes (msgpack only: JSON has no form for them) */
	WARREN_ARRAY = 6,
	WARREN_MAP = 7,   /* string keys, unique, in insertion order */
} warren_type;

WARREN_API warren_value *warren_nil(void);
WARREN_API warren_value *warren_bool(bool b);
WARREN_API warren_value *warren_int(int64_t i);
WARREN_API warren_value *warren_float(double d);
WARREN_API warren_value *warren_str(const char *s); /* copies; NULL s -> NULL */
WARREN_API warren_value *warren_strn(const char *s, size_t len);
WARREN_API warren_value *warren_bin(const void *p, size_t len);
WARREN_API warren_value *warren_array(void);
WARREN_API warren_value *warren_map(void);

/* Takes item (also on failure). WARREN_ERR_INVALID if arr is not an array. */
WARREN_API warren_err warren_array_push(warren_value *arr, warren_value *item);
/* Takes val (also on failure); replaces an existing key's value. */
WARREN_API warren_err warren_map_set(warren_value *map, const char *key, warren_value *val);

/* Frees v and all it holds. NULL-safe. */
WARREN_API void warren_value_free(warren_value *v);
/* A deep copy, or NULL when out of memory (or v is NULL). */
WARREN_API warren_value *warren_value_copy(const warren_value *v);
/* Deep equality (an INT never equals a FLOAT). */
WARREN_API bool warren_value_equal(const warren_value *a, const warren_value *b);

/* Accessors. A NULL v has type WARREN_NIL. The typed getters return false
 * (leaving *out alone) when v is not of that type. Returned pointers live as
 * long as v. */
WARREN_API warren_type warren_value_type(const warren_value *v);
WARREN_API const char *warren_type_name(warren_type t); /* "string", "map"... */
WARREN_API bool warren_value_get_bool(const warren_value *v, bool *out);
WARREN_API bool warren_value_get_int(const warren_value *v, int64_t *out);
/* Accepts INT too, converted. */
WARREN_API bool warren_value_get_float(const warren_value *v, double *out);
WARREN_API bool warren_value_get_str(const warren_value *v, const char **out, size_t *len);
WARREN_API bool warren_value_get_bin(const warren_value *v, const void **out, size_t *len);
/* Number of items of an array or entries of a map; 0 for anything else. */
WARREN_API size_t warren_value_len(const warren_value *v);
/* NULL when out of range or not an array. */
WARREN_API const warren_value *warren_array_at(const warren_value *arr, size_t i);
/* NULL when absent or not a map. */
WARREN_API const warren_value *warren_map_get(const warren_value *map, const char *key);
/* The i-th entry in insertion order; false when out of range or not a map. */
WARREN_API bool warren_map_at(const warren_value *map, size_t i, const char **key,
                              const warren_value **val);

/* JSON text -> value. Rejects duplicate keys, integers outside int64,
 * invalid UTF-8 and trailing garbage; errstr says where ("line 1, column 7:
 * ..."). On success *out is the caller's. */
WARREN_API warren_err warren_value_from_json(const char *text, size_t len, warren_value **out,
                                             char *errstr, size_t errlen);
/* Value -> compact JSON text (malloc'd, the caller frees it). Keys keep their
 * order. WARREN_ERR_INVALID for BIN, NaN or infinity, which JSON cannot hold. */
WARREN_API warren_err warren_value_to_json(const warren_value *v, char **out, char *errstr,
                                           size_t errlen);

/* ------------------------------------------------------------- configuration */

/* One table of keys drives the file parser, -o overrides and warren.conf(5).
 * A config is not thread-safe; clients and workers copy what they need. */
typedef struct warren_config warren_config;

/* A config holding every key's default, or NULL when out of memory. */
WARREN_API warren_config *warren_config_new(void);
WARREN_API void warren_config_free(warren_config *cfg); /* NULL-safe */
/* Reads an INI file ([section] then key = value; '#' or ';' comments). A
 * file with a bad line changes nothing: errstr is "FILE:LINE: MESSAGE". */
WARREN_API warren_err warren_config_load(warren_config *cfg, const char *path, char *errstr,
                                         size_t errlen);
/* Sets "section.key" from text, validated against the table. */
WARREN_API warren_err warren_config_set(warren_config *cfg, const char *key, const char *value,
                                        char *errstr, size_t errlen);
/* Parses "section.key=value", as given to -o. */
WARREN_API warren_err warren_config_set_arg(warren_config *cfg, const char *arg, char *errstr,
                                            size_t errlen);
/* The current value in canonical text (durations in ms), or NULL for an
 * unknown key. Valid until the key is next set or cfg is freed. */
WARREN_API const char *warren_config_get(const warren_config *cfg, const char *key);

/* Whether key was given: by a file, -o or warren_config_set, even empty or
 * as its default value; false for one left at its default, for an
 * unknown key and for a NULL cfg. Tells "left out" from "given empty". */
WARREN_API bool warren_config_is_set(const warren_config *cfg, const char *key);

/* The current value of an INT, BOOL (0 or 1), DURATION (ms), SIZE (bytes)
 * or ENUM (the index of its name) key in *out. WARREN_ERR_INVALID for an
 * unknown key or a STRING one (use warren_config_get). */
WARREN_API warren_err warren_config_get_int(const warren_config *cfg, const char *key,
                                            int64_t *out);

/* The types of a key, as warren.conf(5) describes them. */
typedef enum warren_key_type {
	WARREN_KEY_STRING = 0,
	WARREN_KEY_INT = 1,      /* decimal, within min..max */
	WARREN_KEY_BOOL = 2,     /* true/false, yes/no, on/off, 1/0 */
	WARREN_KEY_DURATION = 3, /* "250ms", "30s", "2m", "1h" or seconds; min..max in ms */
	WARREN_KEY_SIZE = 4,     /* "65536", "64k", "1M"; min..max in bytes */
	WARREN_KEY_ENUM = 5,     /* one of values */
} warren_key_type;

/* A configuration key of a program's own, beside the library's: it is
 * read from the same file and -o options, validated the same way and
 * reloaded on SIGHUP by warren_daemon when reloadable. */
typedef struct warren_key {
	const char *name;        /* "section.name": a-z, 0-9 and _, in a section that
	                          * is not one of the library's (broker, client,
	                          * worker, message, log, security, metrics) */
	warren_key_type type;
	int64_t min, max;        /* inclusive range of INT, DURATION and SIZE */
	const char *def;         /* the default, in the file's syntax (NULL: "") */
	bool reloadable;         /* warren_daemon applies a new value on SIGHUP */
	const char *const *values; /* ENUM: the names, NULL-terminated */
	const char *description; /* one sentence, for the program's man page */
	/* When set, the value may carry a password (a URL's user:password@, a
	 * password= keyword): -o refuses such a value, since every user of the
	 * machine can read a command line, and names this key (the file the
	 * secret belongs in) instead. */
	const char *password_file;
} warren_key;

/* Adds key to cfg at its default; the strings are copied. Only before the
 * config is loaded or set: the key is then known to warren_config_load,
 * _set, _set_arg, _get and _get_int. WARREN_ERR_INVALID, with errstr, for a
 * malformed name, a section of the library's, a name already a key, a
 * range with min > max, an ENUM without values, or a default that its own
 * type or range refuses. */
WARREN_API warren_err warren_config_add_key(warren_config *cfg, const warren_key *key,
                                            char *errstr, size_t errlen);

/* Reads a secret: the first line (without its newline) of the file named
 * by the STRING key, a relative name being looked up in systemd's
 * $CREDENTIALS_DIRECTORY (LoadCredential=) when that is set. An empty key
 * gives "" and WARREN_OK. WARREN_ERR_CONFIG, with errstr "KEY: PATH:
 * why", for a file that cannot be read, an empty first line or one of cap
 * bytes or more; WARREN_ERR_INVALID for an unknown or non-STRING key. On
 * any failure dst holds "". */
WARREN_API warren_err warren_config_read_secret(const warren_config *cfg, const char *key,
                                                char *dst, size_t cap, char *errstr,
                                                size_t errlen);

/* The library logs one logfmt line per event on stderr ("level=warn
 * time=... prog=NAME msg=..."). This sets NAME (NULL: unchanged) and the
 * lowest level written, from cfg's log.level (NULL: unchanged). The
 * setting is process-wide. */
WARREN_API void warren_log_configure(const warren_config *cfg, const char *program);

/* The levels of log.level, most severe first. */
typedef enum warren_log_level {
	WARREN_LOG_ERROR = 0,
	WARREN_LOG_WARN = 1,
	WARREN_LOG_INFO = 2,
	WARREN_LOG_DEBUG = 3,
} warren_log_level;

/* Writes one line at level (when log.level lets it through) as the
 * library does, msg="..." quoted. Thread-safe: lines never interleave. */
WARREN_API void warren_log(warren_log_level level, const char *fmt, ...) WARREN_PRINTF(2, 3);

/* -------------------------------------------------------------------- client */

typedef struct warren_client warren_client;

/* Starts a client: its I/O thread connects to the first reachable URL of
 * broker.url and sets up the reply path. Waits for that first connection up
 * to broker.connect_timeout: WARREN_ERR_TRANSPORT when none succeeds.
 * cfg is only read during the call. app_id names the caller (NULL: "warren").
 * When client.metrics_listen is set it first starts serving Prometheus
 * metrics at /metrics on that HOST:PORT, from a thread of its own
 * (libmicrohttpd), until warren_client_free: WARREN_ERR_CONFIG when the host
 * does not resolve, WARREN_ERR_SYSTEM when the address cannot be bound, and
 * then nothing is started (warren.conf(5) lists the series). */
WARREN_API warren_err warren_client_new(const warren_config *cfg, const char *app_id,
                                        warren_client **out, char *errstr, size_t errlen);
/* Ends every pending call with WARREN_ERR_CLOSED (their callbacks run before
 * this returns), stops the I/O thread, closes the connection. NULL-safe.
 * Must not be called from a completion callback. */
WARREN_API void warren_client_free(warren_client *c);

/* Per-call options; a NULL pointer or zeroed struct means the defaults. */
typedef struct warren_call_opts {
	int64_t timeout_ms;     /* 0: client.timeout */
	const char *message_id; /* idempotency key; NULL: a fresh one per call */
	bool json;              /* send application/json instead of msgpack */
	bool transient;         /* delivery_mode=1: need not survive a broker restart */
	/* W3C traceparent to continue: a handler passes
	 * warren_request_traceparent(req) so that its nested call joins the
	 * trace. NULL: the call starts a trace of its own. */
	const char *traceparent;
} warren_call_opts;

/* A reply: its status and body. Owned by whoever received it. */
typedef struct warren_reply warren_reply;
WARREN_API warren_status warren_reply_status(const warren_reply *r);
/* OK: the result. Otherwise: the error's details (often NULL). */
WARREN_API const warren_value *warren_reply_result(const warren_reply *r);
/* The error message of a non-OK reply; "" for OK. Never NULL. */
WARREN_API const char *warren_reply_message(const warren_reply *r);
WARREN_API const char *warren_reply_correlation_id(const warren_reply *r);
WARREN_API void warren_reply_free(warren_reply *r); /* NULL-safe */

/* A blocking call: publishes METHOD with params (NULL: an empty map), waits
 * for the reply or the deadline. Returns:
 *  WARREN_OK            *reply holds the result (status OK);
 *  WARREN_ERR_REMOTE    *reply holds the service's status and message;
 *  WARREN_ERR_TIMEOUT, _UNROUTABLE, _TRANSPORT, _BROKER, _FULL, _CLOSED,
 *  _INVALID, _NOMEM, _DECODE (a reply without rpc-status or with an
 *  unreadable body)     *reply is NULL, errstr says why.
 * Thread-safe; must not be called from a completion callback. */
WARREN_API warren_err warren_call(warren_client *c, const char *method, const warren_value *params,
                                  const warren_call_opts *opts, warren_reply **reply,
                                  char *errstr, size_t errlen);

/* Completion of an asynchronous call. Runs exactly once, on the client's I/O
 * thread; must not block and must not call warren_call, warren_send or
 * warren_client_free (warren_call_async is fine). err and reply as for warren_call; the callback
 * owns reply. errmsg is never NULL ("" on success) and lives until it returns. */
typedef void (*warren_done_fn)(warren_err err, warren_reply *reply, const char *errmsg, void *arg);

/* Starts a call and returns at once. WARREN_OK: done will run later.
 * Anything else: it will not run, and errstr says why. Thread-safe. */
WARREN_API warren_err warren_call_async(warren_client *c, const char *method,
                                        const warren_value *params, const warren_call_opts *opts,
                                        warren_done_fn done, void *arg, char *errstr,
                                        size_t errlen);

/* A one-way call: no reply_to, no reply. Blocks until the broker confirmed
 * the request (WARREN_OK) or refused it. Thread-safe. */
WARREN_API warren_err warren_send(warren_client *c, const char *method, const warren_value *params,
                                  const warren_call_opts *opts, char *errstr, size_t errlen);

/* Counters since the client started; each read is a consistent snapshot. */
typedef struct warren_client_stats {
	uint64_t calls;          /* calls accepted */
	uint64_t replies;        /* calls ended by a reply (any status) */
	uint64_t timeouts;       /* calls ended at their deadline */
	uint64_t unroutable;     /* calls ended by basic.return */
	uint64_t failed;         /* calls ended by nack, connection loss or shutdown */
	uint64_t republished;    /* requests published again (no route, nack, lost before
	                          * the confirm) */
	uint64_t late_replies;   /* replies for a call that had already ended */
	uint64_t unknown_replies;/* replies whose correlation id was never ours */
	/* replies ignored as not from the service: with security.scheme set, a
	 * signature that does not verify or a sealed body that does not open
	 * (the call keeps waiting for the real reply) */
	uint64_t untrusted_replies;
	uint64_t reconnects;     /* connections made after the first */
	uint64_t in_flight;      /* calls not yet ended, now */
	uint64_t blocked_ms;     /* time the broker has blocked this client's publishes */
	uint64_t fast_sent;      /* requests published on the fast lane (rpc.fast) */
	uint64_t fast_fallbacks; /* transient requests the fast lane returned (no queue
	                          * bound), sent again on the durable lane */
	uint64_t reply_batches;  /* batches of replies received (warren(7) BATCHES) */
	uint64_t bad_batches;    /* batches of replies dropped as malformed */
	uint64_t request_batches;/* batches of requests published (warren(7) BATCHES) */
	uint64_t batch_fallbacks;/* batches returned: the service takes no batches, its
	                          * requests went alone */
	bool connected;          /* connected to the broker, the reply path set up */
	/* requests sent again because the connection was lost after the broker
	 * confirmed them (client.resend): same message_id, new reply path */
	uint64_t resent;
} warren_client_stats;
WARREN_API void warren_client_get_stats(warren_client *c, warren_client_stats *out);

/* -------------------------------------------------------------------- worker */

typedef struct warren_worker warren_worker;

/* A request as a handler sees it; valid only during the handler call. */
typedef struct warren_request warren_request;
WARREN_API const char *warren_request_method(const warren_request *r);
WARREN_API const warren_value *warren_request_params(const warren_request *r);
WARREN_API const char *warren_request_correlation_id(const warren_request *r); /* "" if none */
WARREN_API const char *warren_request_message_id(const warren_request *r);     /* "" if none */
WARREN_API const char *warren_request_app_id(const warren_request *r);         /* "" if none */
/* The request's W3C traceparent ("" if none), to pass on in nested calls. */
WARREN_API const char *warren_request_traceparent(const warren_request *r);
/* Unix ms; 0 when the caller set no deadline. */
WARREN_API int64_t warren_request_deadline_ms(const warren_request *r);
WARREN_API int warren_request_attempt(const warren_request *r);
WARREN_API bool warren_request_redelivered(const warren_request *r);
WARREN_API bool warren_request_one_way(const warren_request *r);
/* The handler thread's own pointer, set by the thread_init hook (or NULL). */
WARREN_API void *warren_request_thread_data(const warren_request *r);

/* Sets the result of an OK reply (takes result; NULL: nil). */
WARREN_API void warren_request_set_result(warren_request *r, warren_value *result);
/* Records an error message (and optional details, taken) and returns status,
 * so a handler can end with: return warren_request_fail(r, ...); */
WARREN_API warren_status warren_request_fail(warren_request *r, warren_status status,
                                             warren_value *details, const char *fmt, ...)
	WARREN_PRINTF(4, 5);

/* A method's handler. Runs on one of the pool's handler threads (never the
 * I/O thread), so it may block, within the request's deadline; one
 * registered with warren_worker_handle_inline runs on the I/O thread.
 * Returns the reply's status; OK with the result set by
 * warren_request_set_result. */
typedef warren_status (*warren_handler_fn)(warren_request *req, void *arg);

/* Per-thread hooks, run on each handler thread as it starts and ends. */
typedef void *(*warren_thread_init_fn)(int index, void *arg);
typedef void (*warren_thread_fini_fn)(void *thread_data, void *arg);

/* A worker for worker.service, not yet connected. */
WARREN_API warren_err warren_worker_new(const warren_config *cfg, warren_worker **out,
                                        char *errstr, size_t errlen);
/* Registers METHOD ("user.get": it must start with the service's name and a
 * dot). Only before warren_worker_start. */
WARREN_API warren_err warren_worker_handle(warren_worker *w, const char *method,
                                           warren_handler_fn fn, void *arg);
/* As warren_worker_handle, but fn runs on the worker's I/O thread as the
 * request is delivered, with no hand-off to a handler thread and back: for
 * handlers that answer from memory and never block (no I/O, no sleep, no
 * lock held for long). While it runs the worker neither reads nor writes
 * its connection; it has no time limit (warren_worker_set_timeout refuses
 * it) and its thread data is NULL. */
WARREN_API warren_err warren_worker_handle_inline(warren_worker *w, const char *method,
                                                  warren_handler_fn fn, void *arg);
WARREN_API warren_err warren_worker_on_thread(warren_worker *w, warren_thread_init_fn init,
                                              warren_thread_fini_fn fini, void *arg);
/* A method's own time limit (instead of worker.handler_timeout): past it
 * the request is answered DEADLINE_EXCEEDED, dead-lettered and acked while
 * the handler runs on; its result is dropped. Must be shorter than
 * broker.consumer_timeout (warren_worker_start checks). Set after
 * warren_worker_handle, before warren_worker_start. */
WARREN_API warren_err warren_worker_set_timeout(warren_worker *w, const char *method,
                                                int64_t timeout_ms);

/* The circuit breaker's probe: after worker.breaker_threshold consecutive
 * UNAVAILABLE or RESOURCE_EXHAUSTED failures the worker stops consuming and,
 * every worker.breaker_probe, runs fn on a handler thread (with that
 * thread's data); OK means the dependency is back, and consuming resumes.
 * Without a probe the worker simply tries again after the interval. Set
 * before warren_worker_start. */
typedef warren_status (*warren_probe_fn)(void *thread_data, void *arg);
WARREN_API warren_err warren_worker_set_probe(warren_worker *w, warren_probe_fn fn, void *arg);

/* Starts the handler threads and the I/O thread, connects, declares the
 * service's objects and consumes. Waits for the first connection up to
 * broker.connect_timeout (WARREN_ERR_TRANSPORT when none succeeds). When
 * metrics.listen is set it first starts serving Prometheus metrics at
 * /metrics on that HOST:PORT, from a thread of its own (libmicrohttpd), until
 * warren_worker_free: WARREN_ERR_CONFIG when the host does not resolve,
 * WARREN_ERR_SYSTEM when the address cannot be bound, and then nothing is
 * started (warren.conf(5) lists the series). */
WARREN_API warren_err warren_worker_start(warren_worker *w, char *errstr, size_t errlen);
/* Stops consuming, lets the handlers finish for up to grace_ms, replies to and
 * acks what finished; what did not finish goes back to the queue when the
 * connection closes. Returns WARREN_ERR_TIMEOUT if the grace ran out. */
WARREN_API warren_err warren_worker_stop(warren_worker *w, int grace_ms);
/* Stops if needed (grace 0) and frees. NULL-safe. */
WARREN_API void warren_worker_free(warren_worker *w);

typedef struct warren_worker_stats {
	uint64_t received;      /* deliveries taken from the queue */
	uint64_t replied;       /* replies confirmed by the broker */
	uint64_t acked;         /* requests acked */
	uint64_t expired;       /* dropped unexecuted: deadline passed */
	uint64_t dead_lettered; /* poison, confirmed in the dead-letter queue */
	uint64_t retried;       /* transient failures sent to wait for another attempt */
	uint64_t handler_errors;/* handlers that returned a status other than OK */
	uint64_t reconnects;
	uint64_t in_progress;   /* in a handler or waiting for one, now */
	uint64_t completed;     /* handlers that returned (any status) */
	uint64_t io_loops;      /* turns of the I/O thread's loop; each reading of the stats
	                         * wakes the thread, so an alive one has moved it by the next */
	uint64_t breaker_trips; /* times the circuit breaker opened */
	uint64_t unauthenticated; /* refused: unsigned, bad signature, or key not allowed */
	uint64_t replays;       /* dropped: the same signed request seen again within the window */
	uint64_t redelivered;   /* deliveries the broker marked redelivered */
	uint64_t blocked_ms;    /* time the broker has blocked this worker's publishes */
	uint64_t unroutable;    /* dead letters and retries the broker returned unroutable
	                         * (their requests are held, not acked) */
	uint64_t stale_dropped; /* queued requests of a lost connection dropped unrun (the
	                         * broker redelivers them) */
	uint64_t detached_handlers; /* handler threads still stuck when the worker stopped,
	                             * left behind instead of joined */
	uint64_t fast_received; /* of received, those from the fast lane (rpc.<service>.fast) */
	uint64_t moved;         /* fast-lane requests redelivered after a crash, moved to the
	                         * durable lane before running (warren(7)) */
	uint64_t reply_batches;  /* batches of replies published (warren(7) BATCHES) */
	uint64_t batched_replies;/* replies that went in them */
	uint64_t request_batches;/* batches of requests received (each entry is also
	                          * counted in received) */
	uint64_t batches_split;  /* batches of requests delivered again, republished
	                          * as single requests instead of run */
	uint64_t bad_batches;    /* batches of requests that could not be read, rejected */
	uint64_t reply_cache_hits;    /* repeated requests answered from the reply cache
	                               * (or by their twin's run), their handler not run */
	uint64_t reply_cache_entries; /* replies (and runs) in the reply cache, now */
	int threads;            /* handler threads of the pool */
	bool connected;         /* connected to the broker */
	bool breaker_open;      /* not consuming: a dependency keeps failing */
	char breaker_error[256];/* the failure that opened it */
} warren_worker_stats;
WARREN_API void warren_worker_get_stats(warren_worker *w, warren_worker_stats *out);

/* -------------------------------------------------------------------- daemon */

/* Exit statuses of warren's programs, the table of warren(7) EXIT STATUS,
 * for a program's main to return. Never renumbered: scripts and systemd's
 * RestartPreventExitStatus= use them. */
typedef enum warren_exit {
	WARREN_EXIT_OK = 0,          /* done; a daemon stopped cleanly */
	WARREN_EXIT_FAILED = 1,      /* the work ran and failed; a daemon stopped with requests
	                              * left (the grace ran out, or a second SIGTERM) */
	WARREN_EXIT_USAGE = 2,       /* a bad command line */
	WARREN_EXIT_CONFIG = 3,      /* a bad configuration file, key, value or secret file */
	WARREN_EXIT_UNAVAILABLE = 4, /* the broker (or the metrics address) unavailable */
	WARREN_EXIT_TIMEOUT = 5,     /* a deadline passed before the answer */
	WARREN_EXIT_INTERNAL = 6,    /* out of memory, a system call */
	WARREN_EXIT_INPUT = 7,       /* bad input data */
	WARREN_EXIT_NOT_FOUND = 8,   /* what was named does not exist */
} warren_exit;

/* The exit status for a program whose work ended with err, as warren's
 * programs exit: WARREN_EXIT_OK for WARREN_OK, WARREN_EXIT_FAILED for
 * WARREN_ERR_REMOTE (the service answered with an error), WARREN_EXIT_INPUT
 * for WARREN_ERR_INVALID, WARREN_EXIT_CONFIG, WARREN_EXIT_UNAVAILABLE for
 * the broker unreachable, refusing, lost or a request unroutable,
 * WARREN_EXIT_TIMEOUT, and WARREN_EXIT_INTERNAL for the rest. */
WARREN_API warren_exit warren_exit_for(warren_err err);

/* A worker process as systemd runs it (Type=notify): the standard options,
 * the configuration, logging, signals, sd_notify and the watchdog around a
 * warren_worker, so that a service is its handlers and a few lines of main:
 *
 *     warren_daemon *d;
 *     int status = warren_daemon_new(argc, argv, "echo-service", "echo", &d);
 *
 *     if (d == NULL)
 *         return status;              -h, -V or a bad command line
 *     if (warren_daemon_load(d) == WARREN_EXIT_OK)
 *         warren_worker_handle(warren_daemon_worker(d), "echo.say", say, NULL);
 *     return warren_daemon_run(d);
 *
 * Every function below is called from the thread that runs main, the
 * daemon's thread; the daemon is not thread-safe. libwarren(3) DAEMONS
 * describes the whole life of one. */
typedef struct warren_daemon warren_daemon;

/* Reads the command line: -c/--config FILE, -o/--option key=value
 * (repeated, applied in order after the file), -h/--help (the usage on
 * stdout), -V/--version ("PROGRAM VERSION" on stdout); program names the
 * daemon in messages and logs, service is worker.service when the
 * configuration leaves it empty. Blocks SIGTERM, SIGINT and SIGHUP in the
 * calling thread, which every thread started later inherits (the daemon
 * takes them with sigtimedwait), and ignores SIGPIPE: call it first in
 * main, before any thread starts. Returns WARREN_EXIT_OK with *out the
 * daemon; or *out NULL and the status to exit with: WARREN_EXIT_OK after
 * -h or -V, WARREN_EXIT_USAGE after the error and the usage on stderr
 * ("PROGRAM: unknown option -x"), WARREN_EXIT_INTERNAL when out of memory
 * or program or out is NULL. argv must outlive the daemon. */
WARREN_API int warren_daemon_new(int argc, char **argv, const char *program, const char *service,
                                 warren_daemon **out);

/* Adds a configuration key of the program's own (warren_config_add_key),
 * read by warren_daemon_load with the library's. Only before it:
 * WARREN_ERR_INVALID after. Errors as warren_config_add_key's. */
WARREN_API warren_err warren_daemon_add_key(warren_daemon *d, const warren_key *key,
                                            char *errstr, size_t errlen);

/* Reads the configuration (every key's default, then the -c file, then
 * the -o overrides), applies log.level and the program's name to the log
 * (warren_log_configure), sets worker.service to the daemon's service if
 * empty and creates the worker (warren_worker_new), not yet connected.
 * WARREN_EXIT_OK; or WARREN_EXIT_CONFIG after "PROGRAM: why" on stderr
 * (a bad file, key, value or -o argument, a password in -o), another
 * status for a worker that cannot be created (as warren_daemon_run). A
 * failed load is kept: warren_daemon_run returns its status at once.
 * A NULL d (warren_daemon_run too): WARREN_EXIT_INTERNAL. */
WARREN_API int warren_daemon_load(warren_daemon *d);

/* The running configuration (NULL before warren_daemon_load), which
 * SIGHUP updates in place. Read it on the daemon's thread only: a handler
 * takes what it needs at start or from a reload hook. */
WARREN_API const warren_config *warren_daemon_config(const warren_daemon *d);

/* The daemon's worker (NULL before warren_daemon_load): register the
 * handlers, thread hooks, probe and time limits on it before
 * warren_daemon_run. The daemon owns it. */
WARREN_API warren_worker *warren_daemon_worker(warren_daemon *d);

/* Runs after each SIGHUP whose configuration was taken (not after one
 * refused for a bad file), on the daemon's thread, with the running
 * configuration in which the keys marked reloadable (the library's and the
 * program's) now have their new values. */
typedef void (*warren_reload_fn)(const warren_config *cfg, void *arg);
WARREN_API void warren_daemon_on_reload(warren_daemon *d, warren_reload_fn fn, void *arg);

/* Waits up to ms, handling signals as warren_daemon_run does: SIGHUP
 * reloads, SIGTERM or SIGINT ends the wait and asks the daemon to stop
 * (warren_daemon_run then returns WARREN_EXIT_OK without starting). For
 * work before serving, such as waiting for a database. True when asked to
 * stop. */
WARREN_API bool warren_daemon_sleep(warren_daemon *d, int64_t ms);

/* Names what the worker's circuit breaker protects in the STATUS line
 * sent while it is open: "paused, NAME keeps failing (...)"; copied.
 * Default: "a dependency". */
WARREN_API void warren_daemon_set_dependency(warren_daemon *d, const char *name);

/* Sends STATUS=TEXT to systemd (when $NOTIFY_SOCKET is set). */
WARREN_API void warren_daemon_status(warren_daemon *d, const char *fmt, ...) WARREN_PRINTF(2, 3);

/* Starts the worker (warren_worker_start), tells systemd READY=1, and
 * serves until SIGTERM or SIGINT: meanwhile STATUS= tells what the worker
 * does, WATCHDOG=1 is sent every half $WATCHDOG_USEC while both the I/O
 * thread and the handler pool make progress (a free handler thread or one
 * finished since the last look), and SIGHUP re-reads the configuration
 * from the same sources and applies every key marked reloadable
 * (RELOADING=1, then READY=1; a bad file keeps the running configuration,
 * and changed keys that are not reloadable are logged as waiting for a
 * restart). SIGTERM sends STOPPING=1 and drains: no new request is taken
 * and those in progress have worker.grace to finish. Frees the daemon and
 * returns the status to exit with: WARREN_EXIT_OK once drained;
 * WARREN_EXIT_CONFIG ("PROGRAM: why" on stderr) for a configuration the
 * worker refuses at start; WARREN_EXIT_UNAVAILABLE (logged) when the
 * broker cannot be reached or the metrics address bound;
 * WARREN_EXIT_INTERNAL when out of memory. When the grace runs out, or at
 * a second SIGTERM, the process ends at once with WARREN_EXIT_FAILED
 * (_exit: unfinished requests go back to the queue when the connection
 * closes). */
WARREN_API int warren_daemon_run(warren_daemon *d);

/* Frees a daemon that will not run, its worker and configuration.
 * NULL-safe. */
WARREN_API void warren_daemon_free(warren_daemon *d);

/* Milliseconds since the Unix epoch, as used in rpc-deadline. */
WARREN_API int64_t warren_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif /* WARREN_H */
