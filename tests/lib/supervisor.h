/* supervisor.h: the harness of the crash tests (it_poison,
 * it_poison_prefetch). example-service runs under a thread of the test
 * that restarts it whenever it dies, as systemd would; a client waits
 * until it answers; the tests read back the reasons of the dead letters
 * and tally their asynchronous calls. One supervisor per test program.
 * The checks fail the running cmocka test. */
#ifndef WARREN_TEST_SUPERVISOR_H
#define WARREN_TEST_SUPERVISOR_H

#include <stdatomic.h>

#include "testenv.h"
#include "warren.h"

/* Empties rpc.example and rpc.example.dlq, starts example-service with
 * args (a NULL-terminated list, kept until the teardown) under the
 * supervisor, and a client named app_id with client_overrides (as
 * testenv_config's; NULL: none); 0 once example.echo answers, else -1 (a
 * cmocka group setup's result). */
int supervisor_start(const char *app_id, const char *const *args,
                     const char *const *client_overrides, warren_client **client, struct raw **raw);
/* A cmocka group teardown: stops the supervisor and the service (SIGTERM),
 * frees the client and raw connection of supervisor_start. */
int supervisor_teardown(void **state);
/* A cmocka test setup: empties rpc.example.dlq and counts restarts from 0
 * again. */
int supervisor_forget(void **state);
/* Deaths of the service since the last supervisor_forget, the final stop
 * not counted. */
int supervisor_restarts(void);

/* The rpc-dead-reason of every dead letter in rpc.example.dlq, taken, in
 * order, each followed by a space, once there are want of them (10 s at
 * most). Points into a static buffer. */
const char *supervisor_take_reasons(struct raw *raw, long want);

/* What a set of asynchronous calls ended with: supervisor_on_echo counts
 * each as ok or other; supervisor_on_crash keeps the one call's status
 * (-1 without a reply), message and result as JSON. arg: the tally. */
struct supervisor_tally {
	atomic_int done, ok, other;
	atomic_int crash_status;
	char crash_message[200];
	char crash_details[200];
};
void supervisor_on_echo(warren_err err, warren_reply *reply, const char *errmsg, void *arg);
void supervisor_on_crash(warren_err err, warren_reply *reply, const char *errmsg, void *arg);

#endif
