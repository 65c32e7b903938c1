/* example-service: a worker daemon serving the "example" service, so the
 * whole path can be exercised before real services exist:
 *   example.echo   returns its params
 *   example.sleep  {"ms": N} sleeps N ms, returns {"slept_ms": N}
 *   example.fail   {"code": "NOT_FOUND", "message": "..."} answers that status
 *   example.flaky  {"failures": N} fails UNAVAILABLE on its first N attempts,
 *                  then returns {"attempt": the attempt that succeeded}
 *   example.crash  aborts the process: a request that kills its worker
 *   example.trace  returns {"traceparent": the request's}
 * Exit statuses from exitcodes.h: 0 stopped, 1 stopped with requests left,
 * 2 usage, 3 configuration, 4 the broker or the metrics address
 * unavailable, 6 internal. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "exitcodes.h"
#include "log.h"
#include "warren.h"

#define GRACE_MS 10000

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
	log_warn("example.crash: aborting as asked");
	abort();
}

/* The worker serving every example.* method, in *out; the exit status. */
static int start(warren_config *cfg, warren_worker **out)
{
	warren_worker *w = NULL;
	char why[512];
	warren_err err = warren_worker_new(cfg, &w, why, sizeof(why));
	static const struct {
		const char *method;
		warren_handler_fn fn;
	} methods[] = {
	    {"example.echo", echo},   {"example.sleep", sleep_ms}, {"example.fail", fail},
	    {"example.flaky", flaky}, {"example.crash", crash},    {"example.trace", trace},
	};

	for (size_t i = 0; err == WARREN_OK && i < sizeof(methods) / sizeof(methods[0]); i++) {
		err = warren_worker_handle(w, methods[i].method, methods[i].fn, NULL);
		snprintf(why, sizeof(why), "%s", warren_err_str(err));
	}
	if (err == WARREN_OK) {
		err = warren_worker_start(w, why, sizeof(why));
	}
	if (err != WARREN_OK) {
		log_error("cannot start: %s", why);
		warren_worker_free(w);
		return exitcode_for_start(err);
	}
	*out = w;
	return EXITCODE_OK;
}

int main(int argc, char **argv)
{
	struct cli_config cc = {0};
	char why[512];
	sigset_t sigs;
	int sig = 0, status = cli_parse_daemon_args(argc, argv, "example-service", &cc);

	if (status != 0) {
		return status;
	}
	log_set_program("example-service");
	warren_config *cfg = cli_build_config(&cc, NULL, why, sizeof(why));
	if (cfg == NULL) {
		fprintf(stderr, "example-service: %s\n", why);
		return EXITCODE_CONFIG;
	}
	warren_log_configure(cfg, NULL);
	if (strcmp(warren_config_get(cfg, "worker.service"), "") == 0) {
		warren_config_set(cfg, "worker.service", "example", NULL, 0);
	}
	/* Signals are taken by sigwait in this thread only. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	warren_worker *w = NULL;
	status = start(cfg, &w);
	warren_config_free(cfg);
	if (status != EXITCODE_OK) {
		return status;
	}
	log_info("serving example.echo, example.sleep, example.fail, example.flaky, example.crash, "
	         "example.trace");
	sigwait(&sigs, &sig);
	log_info("signal %d: stopping, grace %d ms", sig, GRACE_MS);
	status = warren_worker_stop(w, GRACE_MS) == WARREN_OK ? EXITCODE_OK : EXITCODE_FAILED;
	warren_worker_free(w);
	return status;
}
