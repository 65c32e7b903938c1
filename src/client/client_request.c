/* client_request.c: building a call's request (ids, envelope, encoding,
 * sealing and signing) and the public calls, async and blocking, that hand
 * it to the I/O thread. */
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
#include "wire.h"

#include "client_int.h"

/* ------------------------------------------------------------ ids */

void client_random_hex(char *dst, size_t nbytes)
{
	unsigned char raw[32];

	fastrand_buf(raw, nbytes);
	sodium_bin2hex(dst, nbytes * 2 + 1, raw, nbytes);
}

/* 128 random bits as 32 hex digits; the first 16 are fixed per client, so a
 * reply to an ended call (late) can be told from one that was never ours. */
static void new_correlation_id(const warren_client *c, char *dst)
{
	memcpy(dst, c->prefix, 16);
	client_random_hex(dst + 16, 8);
}

static warren_err fill_meta(warren_client *c, struct call *call, const char *method,
                            const warren_call_opts *o, char *errstr, size_t errlen)
{
	struct envelope_meta *m = &call->out->meta;
	size_t mlen = strlen(method);

	if (mlen == 0 || mlen >= sizeof(m->method) || strchr(method, '.') == NULL) {
		snprintf(errstr, errlen, "method \"%s\" must be SERVICE.NAME (at most 255 bytes)",
		         method);
		return WARREN_ERR_INVALID;
	}
	if (o->message_id != NULL && (o->message_id[0] == '\0' || strlen(o->message_id) > 64)) {
		snprintf(errstr, errlen, "message_id must be 1 to 64 bytes");
		return WARREN_ERR_INVALID;
	}
	memcpy(m->method, method, mlen + 1);
	new_correlation_id(c, m->correlation_id);
	snprintf(call->entry.id, sizeof(call->entry.id), "%s", m->correlation_id);
	call->entry.id_len = strlen(call->entry.id);
	if (o->message_id != NULL) {
		snprintf(m->message_id, sizeof(m->message_id), "%s", o->message_id);
	} else {
		client_random_hex(m->message_id, 16);
	}
	snprintf(m->app_id, sizeof(m->app_id), "%s", c->app_id);
	if (!call->one_way) {
		snprintf(m->reply_to, sizeof(m->reply_to), "%s",
		         c->reply_mode == REPLY_DIRECT ? WIRE_DIRECT_REPLY_TO : c->reply_queue);
	}
	m->format = o->json ? ENVELOPE_FMT_JSON : ENVELOPE_FMT_MSGPACK;
	m->persistent = !o->transient && !patterns_match(c->transient, m->method, NULL, 0);
	call->fast = !m->persistent;
	m->attempt = 1;
	m->accept_batch = c->batch_replies ? BATCH_VERSION : 0;
	m->deadline_ms = warren_now_ms() + call->timeout_ms;
	trace_child(o->traceparent, m->traceparent);
	return WARREN_OK;
}

static warren_err encode_params(warren_client *c, struct call *call, const warren_value *params,
                                char *errstr, size_t errlen)
{
	warren_value *empty = NULL;
	warren_err err;

	if (params == NULL) {
		empty = warren_map();
		if (empty == NULL) {
			return WARREN_ERR_NOMEM;
		}
		params = empty;
	}
	err = envelope_encode_body(call->out->meta.format, params, &call->out->body,
	                           &call->out->len, errstr, errlen);
	warren_value_free(empty);
	if (err == WARREN_OK && call->out->len > c->max_size) {
		snprintf(errstr, errlen,
		         "request of %zu bytes is larger than message.max_size (%zu)",
		         call->out->len, c->max_size);
		err = WARREN_ERR_INVALID;
	}
	return err;
}

/* Seals the encoded request when security.encrypt names its method. */
static warren_err seal_request(warren_client *c, struct call *call, char *errstr, size_t errlen)
{
	struct outgoing *out = call->out;
	void *sealed = NULL;
	size_t len = 0;

	const char *to = "";

	if (security_request_key(c->sec, out->meta.method, &call->seal_key, &to) != 0) {
		snprintf(errstr, errlen,
		         "security.encrypt: the entry for %s names no key of the keyring",
		         out->meta.method);
		return WARREN_ERR_INVALID;
	}
	if (call->seal_key == NULL) {
		return WARREN_OK;
	}
	if (seal_body(call->seal_key, out->body, out->len, &sealed, &len) != 0) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	free(out->body);
	out->body = sealed;
	out->len = len;
	out->meta.sealed = true;
	snprintf(out->meta.sealed_to, sizeof(out->meta.sealed_to), "%s", to);
	return WARREN_OK;
}

static struct call *call_new(warren_client *c, const char *method, const warren_value *params,
                             const warren_call_opts *opts, bool one_way, char *errstr,
                             size_t errlen, warren_err *err)
{
	static const warren_call_opts defaults = {0};
	const warren_call_opts *o = opts != NULL ? opts : &defaults;
	struct call *call = calloc(1, sizeof(*call));

	*err = WARREN_ERR_NOMEM;
	if (call == NULL || (call->out = calloc(1, sizeof(*call->out))) == NULL) {
		snprintf(errstr, errlen, "out of memory");
		goto fail;
	}
	call->client = c;
	call->one_way = one_way;
	call->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : c->default_timeout_ms;
	call->tries = 1;
	call->task.run = client_publish_task;
	call->hold.release = client_release_call;
	*err = fill_meta(c, call, method, o, errstr, errlen);
	if (*err == WARREN_OK) {
		call->resend =
		    !one_way && patterns_match(c->resend, call->out->meta.method, NULL, 0);
		*err = encode_params(c, call, params, errstr, errlen);
	}
	if (*err == WARREN_OK && c->sec != NULL) {
		*err = seal_request(c, call, errstr, errlen);
	}
	if (*err == WARREN_OK && c->sec != NULL) {
		security_sign_request(c->sec, &call->out->meta, call->out->body, call->out->len,
		                      &call->out->sig);
	}
	if (*err == WARREN_OK) {
		return call;
	}
fail:
	if (call != NULL) {
		client_call_release(call);
	}
	return NULL;
}

warren_err client_start_call(warren_client *c, const char *method, const warren_value *params,
                             const warren_call_opts *opts, bool one_way, warren_done_fn done,
                             void *arg, char *errstr, size_t errlen)
{
	warren_err err;
	struct call *call;

	if (c == NULL || method == NULL || done == NULL) {
		snprintf(errstr, errlen, "client, method and callback are required");
		return WARREN_ERR_INVALID;
	}
	call = call_new(c, method, params, opts, one_way, errstr, errlen, &err);
	if (call == NULL) {
		return err;
	}
	call->done = done;
	call->arg = arg;
	call->entry.deadline = engine_now() + call->timeout_ms;
	call->metrics = client_metrics_method(&c->metrics, method);
	clock_gettime(CLOCK_MONOTONIC, &call->started);
	pthread_mutex_lock(&c->stats_mu);
	c->stats.calls++;
	c->stats.in_flight++;
	pthread_mutex_unlock(&c->stats_mu);
	if (!engine_submit(c->engine, &call->task)) {
		pthread_mutex_lock(&c->stats_mu);
		c->stats.calls--;
		c->stats.in_flight--;
		pthread_mutex_unlock(&c->stats_mu);
		client_call_release(call);
		snprintf(errstr, errlen, "the client is shutting down");
		return WARREN_ERR_CLOSED;
	}
	return WARREN_OK;
}

warren_err warren_call_async(warren_client *c, const char *method, const warren_value *params,
                             const warren_call_opts *opts, warren_done_fn done, void *arg,
                             char *errstr, size_t errlen)
{
	return client_start_call(c, method, params, opts, false, done, arg, errstr, errlen);
}

/* ------------------------------------------------------------ blocking calls */

/* How long a blocking caller waits past its call's deadline for the I/O
 * thread to end the call, before it ends its wait itself. */
#define WAIT_GRACE_MS 25

/* A blocking caller's wait. On the heap, shared by the caller and the
 * call's completion (on the I/O thread), and freed by whichever lets go
 * last: a caller that gave up at its deadline returns at once, and the
 * completion that comes later finds the waiter abandoned. */
struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	int refs;            /* under mu: the caller, the completion */
	bool done;           /* the completion has run */
	bool abandoned;      /* the caller returned without the outcome */
	warren_err err;
	warren_reply *reply;
	char msg[512];
};

/* Drops one reference, with w->mu held (and releases it). */
static void waiter_release(struct waiter *w)
{
	bool last = --w->refs == 0;

	pthread_mutex_unlock(&w->mu);
	if (last) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cond);
		free(w);
	}
}

static struct waiter *waiter_new(void)
{
	struct waiter *w = calloc(1, sizeof(*w));
	pthread_condattr_t attr;

	if (w == NULL) {
		return NULL;
	}
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cond, &attr);
	pthread_condattr_destroy(&attr);
	w->refs = 2;
	return w;
}

static void wake_waiter(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct waiter *w = arg;

	pthread_mutex_lock(&w->mu);
	if (w->abandoned) {
		warren_reply_free(reply);
	} else {
		w->err = err;
		w->reply = reply;
		snprintf(w->msg, sizeof(w->msg), "%s", msg);
		w->done = true;
		pthread_cond_signal(&w->cond);
	}
	waiter_release(w);
}

/* Waits for w's outcome until timeout_ms + WAIT_GRACE_MS from now; true
 * when it came, false when the wait was given up (w is then abandoned).
 * With w->mu held. */
static bool waiter_wait(struct waiter *w, int64_t timeout_ms)
{
	struct timespec until;
	int64_t ms = timeout_ms + WAIT_GRACE_MS;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	while (!w->done) {
		if (pthread_cond_timedwait(&w->cond, &w->mu, &until) == ETIMEDOUT && !w->done) {
			w->abandoned = true;
			return false;
		}
	}
	return true;
}

/* The call's own deadline bounds the wait: when the I/O thread cannot end
 * the call (it is stuck in the library), the caller ends its wait itself
 * shortly after the deadline, and the call is released by the I/O thread
 * whenever it gets to it. */
static warren_err call_and_wait(warren_client *c, const char *method, const warren_value *params,
                                const warren_call_opts *opts, bool one_way, warren_reply **reply,
                                char *errstr, size_t errlen)
{
	struct waiter *w = waiter_new();
	int64_t timeout_ms;
	warren_err err;

	if (w == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	timeout_ms = opts != NULL && opts->timeout_ms > 0 ? opts->timeout_ms
	             : c != NULL                          ? c->default_timeout_ms
	                                                  : 0;
	err = client_start_call(c, method, params, opts, one_way, wake_waiter, w, errstr, errlen);
	pthread_mutex_lock(&w->mu);
	if (err != WARREN_OK) {
		w->refs--; /* done will not run */
	} else if (!waiter_wait(w, timeout_ms)) {
		err = WARREN_ERR_TIMEOUT;
		snprintf(errstr, errlen,
		         "no reply within %lld ms (the client's I/O thread did not "
		         "end the call in time)",
		         (long long)timeout_ms);
	} else {
		err = w->err;
		if (err != WARREN_OK && err != WARREN_ERR_REMOTE) {
			snprintf(errstr, errlen, "%s", w->msg);
		}
		if (reply != NULL) {
			*reply = w->reply;
		} else {
			warren_reply_free(w->reply);
		}
		w->reply = NULL;
	}
	waiter_release(w);
	return err;
}

warren_err warren_call(warren_client *c, const char *method, const warren_value *params,
                       const warren_call_opts *opts, warren_reply **reply, char *errstr,
                       size_t errlen)
{
	if (reply == NULL) {
		snprintf(errstr, errlen, "reply is required");
		return WARREN_ERR_INVALID;
	}
	*reply = NULL;
	return call_and_wait(c, method, params, opts, false, reply, errstr, errlen);
}

warren_err warren_send(warren_client *c, const char *method, const warren_value *params,
                       const warren_call_opts *opts, char *errstr, size_t errlen)
{
	return call_and_wait(c, method, params, opts, true, NULL, errstr, errlen);
}
