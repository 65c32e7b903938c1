/* supervisor.c: example-service restarted as systemd would, and what the
 * crash tests read back (supervisor.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "supervisor.h"

static struct {
	pthread_t thread;
	atomic_bool stop;
	atomic_int restarts; /* deaths other than the final stop */
	atomic_int pid;
	warren_client *client;
	struct raw *raw;
} sup;

static void *supervise(void *arg)
{
	const char *const *args = arg;

	while (!atomic_load(&sup.stop)) {
		pid_t pid = testenv_spawn("example-service", args, false);
		int status;

		atomic_store(&sup.pid, pid);
		waitpid(pid, &status, 0);
		if (!atomic_load(&sup.stop)) {
			atomic_fetch_add(&sup.restarts, 1);
			usleep(100000); /* as Restart= waits a little */
		}
	}
	return NULL;
}

int supervisor_start(const char *app_id, const char *const *args,
                     const char *const *client_overrides, warren_client **client, struct raw **raw)
{
	warren_config *cfg = testenv_config(client_overrides);
	warren_err err;

	*raw = raw_connect();
	raw_purge(*raw, "rpc.example");
	raw_purge(*raw, "rpc.example.dlq");
	sup.raw = *raw;
	pthread_create(&sup.thread, NULL, supervise, (void *)args);
	err = warren_client_new(cfg, app_id, client, NULL, 0);
	warren_config_free(cfg);
	sup.client = err == WARREN_OK ? *client : NULL;
	if (err != WARREN_OK) {
		return -1;
	}
	/* Up once it answers. */
	for (int i = 0; i < 100; i++) {
		warren_reply *r = NULL;

		if (warren_call(*client, "example.echo", NULL,
		                &(warren_call_opts){.timeout_ms = 500}, &r, NULL, 0) == WARREN_OK) {
			warren_reply_free(r);
			return 0;
		}
	}
	return -1;
}

int supervisor_teardown(void **state)
{
	atomic_store(&sup.stop, true);
	kill(atomic_load(&sup.pid), SIGTERM);
	pthread_join(sup.thread, NULL);
	warren_client_free(sup.client);
	raw_close(sup.raw);
	return 0;
}

int supervisor_restarts(void)
{
	return atomic_load(&sup.restarts);
}

int supervisor_forget(void **state)
{
	raw_purge(sup.raw, "rpc.example.dlq");
	atomic_store(&sup.restarts, 0);
	return 0;
}

const char *supervisor_take_reasons(struct raw *raw, long want)
{
	static char out[4096];
	amqp_message_t msg;

	out[0] = '\0';
	assert_int_equal(raw_await_count(raw, "rpc.example.dlq", want, 10000), want);
	while (raw_get(raw, "rpc.example.dlq", &msg) == 0) {
		const char *r = raw_header(&msg.properties, "rpc-dead-reason");

		strncat(out, r != NULL ? r : "(none)", sizeof(out) - strlen(out) - 2);
		strcat(out, " ");
		amqp_destroy_message(&msg);
	}
	return out;
}

void supervisor_on_echo(warren_err err, warren_reply *reply, const char *errmsg, void *arg)
{
	struct supervisor_tally *t = arg;

	atomic_fetch_add(err == WARREN_OK ? &t->ok : &t->other, 1);
	atomic_fetch_add(&t->done, 1);
	warren_reply_free(reply);
}

void supervisor_on_crash(warren_err err, warren_reply *reply, const char *errmsg, void *arg)
{
	struct supervisor_tally *t = arg;
	char *text = NULL;

	atomic_store(&t->crash_status, reply != NULL ? (int)warren_reply_status(reply) : -1);
	if (reply != NULL) {
		snprintf(t->crash_message, sizeof(t->crash_message), "%s",
		         warren_reply_message(reply));
		if (warren_value_to_json(warren_reply_result(reply), &text, NULL, 0) == WARREN_OK) {
			snprintf(t->crash_details, sizeof(t->crash_details), "%s", text);
			free(text);
		}
	} else {
		snprintf(t->crash_message, sizeof(t->crash_message), "%s: %s", warren_err_str(err),
		         errmsg);
	}
	atomic_fetch_add(&t->done, 1);
	warren_reply_free(reply);
}
