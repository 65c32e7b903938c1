/* example-service: a worker daemon serving the "example" service, so the
 * whole path can be exercised before real services exist:
 *   example.echo   returns its params
 *   example.sleep  {"ms": N} sleeps N ms, returns {"slept_ms": N}
 *   example.fail   {"code": "NOT_FOUND", "message": "..."} answers that status
 *   example.flaky  {"failures": N} fails UNAVAILABLE on its first N attempts,
 *                  then returns {"attempt": the attempt that succeeded}
 *   example.crash  aborts the process: a request that kills its worker
 *   example.trace  returns {"traceparent": the request's}
 * Written on the public header alone: warren_daemon runs the process
 * (options, configuration, signals, sd_notify). Exit statuses (warren(7)):
 * 0 stopped, 1 stopped with requests left, 2 usage, 3 configuration, 4 the
 * broker or the metrics address unavailable, 6 internal. See
 * example-service(8). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "warren.h"

static warren_status echo(warren_request *req, void *arg)
{
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

static warren_status sleep_ms(warren_request *req, void *arg)
{
	int64_t ms;
	warren_value *result;

	if (!warren_value_get_int(warren_map_get(warren_request_params(req), "ms"), &ms) ||
	    ms < 0 || ms > 600000) {
		return warren_request_fail(req, WARREN_STATUS_INVALID_ARGUMENT, NULL,
		                           "field ms: expected an integer from 0 to 600000");
	}
	nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000}, NULL);
	result = warren_map();
	warren_map_set(result, "slept_ms", warren_int(ms));
	warren_request_set_result(req, result);
	return WARREN_STATUS_OK;
}

static warren_status fail(warren_request *req, void *arg)
{
	const warren_value *p = warren_request_params(req);
	const char *code = NULL, *message = "failed on request";
	warren_status status;
	size_t len;

	if (!warren_value_get_str(warren_map_get(p, "code"), &code, &len) ||
	    warren_status_parse(code, &status) != WARREN_OK || status == WARREN_STATUS_OK) {
		return warren_request_fail(req, WARREN_STATUS_INVALID_ARGUMENT, NULL,
		                           "field code: expected a gRPC status name other than OK");
	}
	warren_value_get_str(warren_map_get(p, "message"), &message, &len);
	return warren_request_fail(req, status, warren_value_copy(warren_map_get(p, "details")),
	                           "%s", message);
}

static warren_status flaky(warren_request *req, void *arg)
{
	int64_t failures = 0;
	int attempt = warren_request_attempt(req);
	warren_value *result;

	warren_value_get_int(warren_map_get(warren_request_params(req), "failures"), &failures);
	if (attempt <= failures) {
		return warren_request_fail(req, WARREN_STATUS_UNAVAILABLE, NULL,
		                           "flaky: attempt %d of %lld planned failures", attempt,
		                           (long long)failures);
	}
	result = warren_map();
	warren_map_set(result, "attempt", warren_int(attempt));
	warren_request_set_result(req, result);
	return WARREN_STATUS_OK;
}

static warren_status trace(warren_request *req, void *arg)
{
	warren_value *result = warren_map();

	warren_map_set(result, "traceparent", warren_str(warren_request_traceparent(req)));
	warren_request_set_result(req, result);
	return WARREN_STATUS_OK;
}

static warren_status crash(warren_request *req, void *arg)
{
	warren_log(WARREN_LOG_WARN, "example.crash: aborting as asked");
	abort();
}

/* Every example.* method on the daemon's worker. */
static warren_err handle_all(warren_worker *w)
{
	static const struct {
		const char *method;
		warren_handler_fn fn;
	} methods[] = {
	    {"example.echo", echo},   {"example.sleep", sleep_ms}, {"example.fail", fail},
	    {"example.flaky", flaky}, {"example.crash", crash},    {"example.trace", trace},
	};
	warren_err err = WARREN_OK;

	for (size_t i = 0; err == WARREN_OK && i < sizeof(methods) / sizeof(methods[0]); i++) {
		err = warren_worker_handle(w, methods[i].method, methods[i].fn, NULL);
	}
	return err;
}

int main(int argc, char **argv)
{
	warren_daemon *d = NULL;
	int status = warren_daemon_new(argc, argv, "example-service", "example", &d);

	if (d == NULL) {
		return status;
	}
	if (warren_daemon_load(d) == WARREN_EXIT_OK &&
	    handle_all(warren_daemon_worker(d)) != WARREN_OK) {
		fprintf(stderr, "example-service: cannot register the example.* methods\n");
		warren_daemon_free(d);
		return WARREN_EXIT_INTERNAL;
	}
	return warren_daemon_run(d);
}
