/* job.c: one request on a handler thread: read the envelope, drop it if its
 * deadline passed, find the method, decode the body, run the handler and
 * encode the reply, then hand the job back to the I/O thread. Poison
 * (undecodable, unknown method) is answered and dead-lettered. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker_int.h"

static void encode_reply(struct job *j, int status, warren_value *body)
{
	char why[300];

	j->status = status;
	if (envelope_encode_body(j->meta.format, body, &j->reply_body, &j->reply_len, why,
	                         sizeof(why)) != WARREN_OK) {
		warren_value *err;

		/* The handler's result has no form in this content type (binary in JSON). */
		j->status = WARREN_STATUS_INTERNAL;
		err = envelope_error_value(j->status, why, NULL);
		if (envelope_encode_body(j->meta.format, err, &j->reply_body, &j->reply_len, why,
		                         sizeof(why)) != WARREN_OK) {
			j->reply_body = NULL;
			j->reply_len = 0;
		}
		warren_value_free(err);
	}
	warren_value_free(body);
}

static void poison(struct warren_worker *w, struct job *j, int status, const char *why)
{
	log_warn("dead-lettering %s correlation_id=%s: %s", j->delivery->routing_key,
	         j->meta.correlation_id, why);
	worker_count(w, &w->stats.rejected, 1);
	j->action = JOB_REPLY_THEN_DEAD_LETTER;
	encode_reply(j, status, envelope_error_value(status, why, NULL));
}

static int clamp_status(warren_status s)
{
	return (int)s >= 0 && (int)s <= 16 ? (int)s : WARREN_STATUS_UNKNOWN;
}

static void run_handler(struct warren_worker *w, struct job *j, const struct method *m,
                        const warren_value *params, void *thread_data)
{
	struct warren_request req = {.meta = &j->meta,
	                             .params = params,
	                             .redelivered = j->delivery->redelivered,
	                             .thread_data = thread_data};
	int status = clamp_status(m->fn(&req, m->arg));

	j->action = j->meta.reply_to[0] != '\0' ? JOB_REPLY_THEN_ACK : JOB_ACK;
	if (status == WARREN_STATUS_OK) {
		warren_value_free(req.details);
		encode_reply(j, status, req.result);
		return;
	}
	worker_count(w, &w->stats.handler_errors, 1);
	warren_value_free(req.result);
	encode_reply(j, status,
	             envelope_error_value(status,
	                                  req.message[0] != '\0' ? req.message
	                                                         : warren_status_name(status),
	                                  req.details));
}

void job_process(struct warren_worker *w, struct job *j, void *thread_data)
{
	const amqp_message_t *msg = &j->delivery->message;
	warren_value *params = NULL;
	const struct method *m;
	char why[400];

	if (envelope_read(&msg->properties, &j->meta, why, sizeof(why)) != WARREN_OK) {
		poison(w, j, WARREN_STATUS_INVALID_ARGUMENT, why);
		return;
	}
	/* A plain AMQP caller may leave type out: the routing key names the method. */
	if (j->meta.method[0] == '\0') {
		snprintf(j->meta.method, sizeof(j->meta.method), "%s", j->delivery->routing_key);
	}
	if (j->meta.deadline_ms > 0 && warren_now_ms() > j->meta.deadline_ms) {
		worker_count(w, &w->stats.expired, 1);
		log_debug("dropped unexecuted, deadline passed: correlation_id=%s",
		          j->meta.correlation_id);
		j->action = JOB_ACK;
		return;
	}
	m = worker_find_method(w, j->meta.method);
	if (m == NULL) {
		snprintf(why, sizeof(why), "unknown method %s", j->meta.method);
		poison(w, j, WARREN_STATUS_UNIMPLEMENTED, why);
		return;
	}
	if (envelope_decode_body(j->meta.format, msg->body.bytes, msg->body.len, w->max_size,
	                         &params, why, sizeof(why)) != WARREN_OK) {
		poison(w, j, WARREN_STATUS_INVALID_ARGUMENT, why);
		return;
	}
	run_handler(w, j, m, params, thread_data);
	warren_value_free(params);
}
