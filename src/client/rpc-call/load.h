/* load.h: a load generator on the public client API: COUNT calls of one
 * method kept IN_FLIGHT at a time, then throughput, latency percentiles and
 * outcomes by status. Used by rpc-call -n/-P. */
#ifndef WARREN_LOAD_H
#define WARREN_LOAD_H

#include <stdio.h>

#include "warren.h"

struct load_result {
	int64_t calls, ok;
	int64_t by_status[17];    /* replies by status (OK included) */
	int64_t by_err[13];       /* local failures by warren_err (no reply) */
	double seconds;           /* wall time of the whole run */
	double p50, p90, p99, p999, max; /* latency of every call, ms */
	warren_err first_err;     /* of the first call that did not end OK */
};

/* Runs the calls with opts (the same params for all; each call gets its
 * own message_id). WARREN_OK once every call ended, whatever its outcome;
 * otherwise a setup error in errstr. */
warren_err load_run(warren_client *c, const char *method, const warren_value *params,
                    const warren_call_opts *opts, int64_t count, int in_flight,
                    struct load_result *out, char *errstr, size_t errlen);

/* Prints the result as three lines. */
void load_print(FILE *to, const char *method, int in_flight, const struct load_result *r);

#endif
