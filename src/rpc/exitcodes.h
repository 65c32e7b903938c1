/* exitcodes.h: the one table of exit statuses every warren program uses
 * (rpc-call, rpc-dlq, warren-key, notify-user, example-service,
 * user-service), so that a status means the same thing whichever program
 * returned it. Small numbers in the spirit of sysexits(3): 0 success, 1 the
 * work ran and failed, 2 usage as getopt programs have it, then one code per
 * class of cause a script may want to tell apart. Each man page lists the
 * codes its program returns (tests/unit/test_exitcodes.sh checks them).
 * Never renumbered: scripts and systemd's RestartPreventExitStatus= use them. */
#ifndef WARREN_EXITCODES_H
#define WARREN_EXITCODES_H

#include "warren.h"

enum exitcode {
	EXITCODE_OK = 0,          /* done */
	EXITCODE_FAILED = 1,      /* the work ran and failed: an error status answered, some
	                           * items refused, a daemon stopped with requests left */
	EXITCODE_USAGE = 2,       /* a bad command line: option, operand, option value */
	EXITCODE_CONFIG = 3,      /* a bad configuration file, key, value or secret file */
	EXITCODE_UNAVAILABLE = 4, /* the broker unreachable, refusing, or no queue bound */
	EXITCODE_TIMEOUT = 5,     /* a deadline passed before the answer */
	EXITCODE_INTERNAL = 6,    /* out of memory, an undecodable reply, a system call */
	EXITCODE_INPUT = 7,       /* bad input data: PARAMS, an import line, an input file */
	EXITCODE_NOT_FOUND = 8,   /* what was named does not exist (a queue, a message) */
};

/* The public names of the same table (warren.h), for programs written on
 * the public header alone. */
#define EXITCODE_SAME(n) ((int)EXITCODE_##n == (int)WARREN_EXIT_##n)
_Static_assert(EXITCODE_SAME(OK) && EXITCODE_SAME(FAILED) && EXITCODE_SAME(USAGE) &&
                   EXITCODE_SAME(CONFIG) && EXITCODE_SAME(UNAVAILABLE) && EXITCODE_SAME(TIMEOUT) &&
                   EXITCODE_SAME(INTERNAL) && EXITCODE_SAME(INPUT) && EXITCODE_SAME(NOT_FOUND),
               "exitcodes.h and warren.h disagree");
#undef EXITCODE_SAME

/* The exit status for how a library call ended. No default: -Wswitch names
 * a warren_err added without its status. */
static inline int exitcode_for(warren_err err)
{
	switch (err) {
	case WARREN_OK:
		return EXITCODE_OK;
	case WARREN_ERR_REMOTE:
		return EXITCODE_FAILED;
	case WARREN_ERR_INVALID:
		return EXITCODE_INPUT;
	case WARREN_ERR_CONFIG:
		return EXITCODE_CONFIG;
	case WARREN_ERR_TRANSPORT:
	case WARREN_ERR_BROKER:
	case WARREN_ERR_UNROUTABLE:
	case WARREN_ERR_CLOSED:
		return EXITCODE_UNAVAILABLE;
	case WARREN_ERR_TIMEOUT:
		return EXITCODE_TIMEOUT;
	case WARREN_ERR_NOMEM:
	case WARREN_ERR_DECODE:
	case WARREN_ERR_FULL:
	case WARREN_ERR_SYSTEM:
		return EXITCODE_INTERNAL;
	}
	return EXITCODE_INTERNAL;
}

/* The exit status of a daemon that could not start: its configuration, or
 * what it needs that is not there (the broker, its metrics address). */
static inline int exitcode_for_start(warren_err err)
{
	switch (err) {
	case WARREN_ERR_CONFIG:
	case WARREN_ERR_INVALID:
		return EXITCODE_CONFIG;
	case WARREN_ERR_NOMEM:
		return EXITCODE_INTERNAL;
	default:
		return EXITCODE_UNAVAILABLE;
	}
}

#endif
