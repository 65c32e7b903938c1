/* request.c: what a handler may read of its request and how it answers. */
#include <stdarg.h>
#include <stdio.h>

#include "worker_int.h"

const char *warren_request_method(const warren_request *r)
{
	return r->meta->method;
}

const warren_value *warren_request_params(const warren_request *r)
{
	return r->params;
}

const char *warren_request_correlation_id(const warren_request *r)
{
	return r->meta->correlation_id;
}

const char *warren_request_message_id(const warren_request *r)
{
	return r->meta->message_id;
}

const char *warren_request_app_id(const warren_request *r)
{
	return r->meta->app_id;
}

const char *warren_request_traceparent(const warren_request *r)
{
	return r->meta->traceparent;
}

int64_t warren_request_deadline_ms(const warren_request *r)
{
	return r->meta->deadline_ms;
}

int warren_request_attempt(const warren_request *r)
{
	return r->meta->attempt;
}

bool warren_request_redelivered(const warren_request *r)
{
	return r->redelivered;
}

bool warren_request_one_way(const warren_request *r)
{
	return r->meta->reply_to[0] == '\0';
}

void *warren_request_thread_data(const warren_request *r)
{
	return r->thread_data;
}

void warren_request_set_result(warren_request *r, warren_value *result)
{
	warren_value_free(r->result);
	r->result = result;
}

warren_status warren_request_fail(warren_request *r, warren_status status, warren_value *details,
                                  const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
	warren_value_free(r->details);
	r->details = details;
	return status;
}
