/* errors.c: the texts and mappings of warren's two error spaces, the local
 * warren_err classes and the gRPC statuses a reply carries, and the clock
 * that rpc-deadline is measured by; and errstr_set, which fills an error
 * buffer. */
#include "errstr.h"
#include "exitcodes.h"
#include "warren.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Indexed by warren_status; the gRPC spelling, which is also the wire text. */
static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

#define STATUS_COUNT ((int)(sizeof(status_names) / sizeof(status_names[0])))

/* No default: -Wswitch then names any new code left without a text. The
 * return after the switch is for numbers outside the enum. */
const char *warren_err_str(warren_err err)
{
	switch (err) {
	case WARREN_OK:
		return "success";
	case WARREN_ERR_INVALID:
		return "invalid argument";
	case WARREN_ERR_NOMEM:
		return "out of memory";
	case WARREN_ERR_CONFIG:
		return "bad configuration";
	case WARREN_ERR_DECODE:
		return "message cannot be decoded";
	case WARREN_ERR_TRANSPORT:
		return "broker unreachable or connection lost";
	case WARREN_ERR_BROKER:
		return "refused by the broker";
	case WARREN_ERR_UNROUTABLE:
		return "no queue is bound for the method";
	case WARREN_ERR_TIMEOUT:
		return "deadline exceeded";
	case WARREN_ERR_REMOTE:
		return "the service answered with an error";
	case WARREN_ERR_FULL:
		return "too many requests in flight";
	case WARREN_ERR_CLOSED:
		return "shutting down";
	case WARREN_ERR_SYSTEM:
		return "a system call failed";
	}
	return "unknown error";
}

const char *warren_status_name(int status)
{
	if (status < 0 || status >= STATUS_COUNT) {
		return "UNKNOWN";
	}
	return status_names[status];
}

/* Exact, case-sensitive match: the names are wire text, not user input. */
warren_err warren_status_parse(const char *name, warren_status *out)
{
	if (name == NULL || out == NULL) {
		return WARREN_ERR_INVALID;
	}
	for (int i = 0; i < STATUS_COUNT; i++) {
		if (strcmp(name, status_names[i]) == 0) {
			*out = (warren_status)i;
			return WARREN_OK;
		}
	}
	return WARREN_ERR_INVALID;
}

/* What a local failure looks like to someone who only sees statuses (the
 * exit code of rpc-call, a worker's reply). No default, as above. */
warren_status warren_err_status(warren_err err)
{
	switch (err) {
	case WARREN_OK:
		return WARREN_STATUS_OK;
	case WARREN_ERR_INVALID:
	case WARREN_ERR_CONFIG:
		return WARREN_STATUS_INVALID_ARGUMENT;
	case WARREN_ERR_NOMEM:
	case WARREN_ERR_FULL:
		return WARREN_STATUS_RESOURCE_EXHAUSTED;
	case WARREN_ERR_DECODE:
	case WARREN_ERR_SYSTEM:
		return WARREN_STATUS_INTERNAL;
	case WARREN_ERR_TRANSPORT:
	case WARREN_ERR_BROKER:
	case WARREN_ERR_UNROUTABLE:
		return WARREN_STATUS_UNAVAILABLE;
	case WARREN_ERR_TIMEOUT:
		return WARREN_STATUS_DEADLINE_EXCEEDED;
	case WARREN_ERR_REMOTE:
		return WARREN_STATUS_UNKNOWN;
	case WARREN_ERR_CLOSED:
		return WARREN_STATUS_CANCELLED;
	}
	return WARREN_STATUS_UNKNOWN;
}

/* Wall-clock time, not CLOCK_MONOTONIC: deadlines cross machines. */
int64_t warren_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void errstr_set(char *errstr, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errstr == NULL || errlen == 0) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(errstr, errlen, fmt, ap);
	va_end(ap);
}

warren_exit warren_exit_for(warren_err err)
{
	return (warren_exit)exitcode_for(err);
}
