/* user-service: the User Service daemon. Serves the user.* methods from
 * PostgreSQL on a warren worker pool, in the foreground under systemd
 * (Type=notify, watchdog); SIGTERM drains, SIGHUP reloads. See user-service(8). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "exitcodes.h"
#include "log.h"
#include "methods.h"
#include "sdnotify.h"
#include "secret.h"
#include "store.h"
#include "warren.h"

#define PROG "user-service"

struct daemon {
	struct cli_config cc;
	warren_config *cfg;
	char conninfo[4096];
	warren_worker *worker;
	int64_t grace_ms;
	sigset_t signals;
	/* Watchdog: what was seen at the last check. */
	warren_worker_stats seen;
	/* Stopping, run by its own thread while signals keep being read. */
	pthread_t stopper;
	atomic_bool stopped;
	warren_err stop_result;
};

static int load_config(struct daemon *d, char *errstr, size_t errlen)
{
	const char *service, *file;

	d->cfg = cli_build_config(&d->cc, NULL, errstr, errlen);
	if (d->cfg == NULL) {
		return -1;
	}
	service = config_str(d->cfg, CFG_WORKER_SERVICE);
	if (service[0] == '\0') {
		warren_config_set(d->cfg, "worker.service", "user", NULL, 0);
	} else if (strcmp(service, "user") != 0) {
		snprintf(errstr, errlen, "worker.service: " PROG " serves \"user\", not \"%s\"",
		         service);
		return -1;
	}
	file = config_str(d->cfg, CFG_DB_CONNINFO_FILE);
	if (file[0] != '\0') {
		if (secret_read_line("db.conninfo_file", file, d->conninfo, sizeof(d->conninfo),
		                     errstr, errlen) != 0) {
			return -1;
		}
	} else {
		snprintf(d->conninfo, sizeof(d->conninfo), "%s",
		         config_str(d->cfg, CFG_DB_CONNINFO));
	}
	if (d->conninfo[0] == '\0') {
		snprintf(errstr, errlen, "no database: set db.conninfo_file or db.conninfo");
		return -1;
	}
	d->grace_ms = config_int(d->cfg, CFG_WORKER_GRACE);
	log_set_level((enum log_level)config_int(d->cfg, CFG_LOG_LEVEL));
	return 0;
}

/* Waits up to ms for a signal of d->signals: the signal, or 0. */
static int wait_signal(struct daemon *d, int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	int sig = sigtimedwait(&d->signals, NULL, &ts);

	return sig > 0 ? sig : 0;
}

/* The schema must be there before any request is taken; the database may
 * come up after us, so wait for it. SIGHUP reloads meanwhile; SIGTERM ends
 * the wait (1: stop cleanly). A schema newer than this program is not
 * waited out: -1. */
static void reload(struct daemon *d);

static int migrate(struct daemon *d)
{
	char why[512];
	int rc;

	while ((rc = store_migrate(d->conninfo, why, sizeof(why))) != STORE_OK) {
		int sig;

		if (rc == STORE_PERMANENT) {
			fprintf(stderr, PROG ": %s\n", why);
			return -1;
		}
		log_warn("%s; retrying in 2 s", why);
		sdnotify_sendf("STATUS=waiting for the database: %s", why);
		sig = wait_signal(d, 2000);
		if (sig == SIGHUP) {
			reload(d);
		} else if (sig != 0) {
			log_info("stopped while waiting for the database");
			return 1;
		}
	}
	return 0;
}

/* EXITCODE_OK; EXITCODE_CONFIG for a configuration the worker refuses;
 * EXITCODE_UNAVAILABLE when it cannot start (no broker). */
static int start_worker(struct daemon *d)
{
	char why[512];
	warren_err err = warren_worker_new(d->cfg, &d->worker, why, sizeof(why));

	if (err == WARREN_OK) {
		err = methods_register(d->worker, d->conninfo);
		snprintf(why, sizeof(why), "%s", warren_err_str(err));
	}
	if (err == WARREN_OK) {
		err = warren_worker_start(d->worker, why, sizeof(why));
	}
	if (err == WARREN_ERR_CONFIG) {
		fprintf(stderr, PROG ": %s\n", why);
		return EXITCODE_CONFIG;
	}
	if (err != WARREN_OK) {
		log_error("cannot start: %s", why);
		return exitcode_for_start(err);
	}
	return EXITCODE_OK;
}

/* Both halves of the worker move: the I/O thread turns, and the pool has
 * a free thread or finished something since the last look. */
static bool making_progress(struct daemon *d)
{
	warren_worker_stats now;
	bool io, pool;

	warren_worker_get_stats(d->worker, &now);
	io = now.io_loops != d->seen.io_loops;
	pool = now.in_progress < (uint64_t)now.threads || now.completed != d->seen.completed;
	d->seen = now;
	return io && pool;
}

static void report(struct daemon *d)
{
	warren_worker_stats s;
	char state[400];

	warren_worker_get_stats(d->worker, &s);
	if (s.breaker_open) {
		snprintf(state, sizeof(state), "paused, the database keeps failing (%s); probing",
		         s.breaker_error);
	} else {
		snprintf(state, sizeof(state), "%s",
		         s.connected ? "consuming" : "reconnecting to the broker");
	}
	sdnotify_sendf("STATUS=%s; %llu received, %llu acked, %llu in progress, %llu expired, "
	               "%llu retried, %llu dead-lettered",
	               state, (unsigned long long)s.received, (unsigned long long)s.acked,
	               (unsigned long long)s.in_progress, (unsigned long long)s.expired,
	               (unsigned long long)s.retried, (unsigned long long)s.dead_lettered);
}

/* SIGHUP: the reloadable keys (log.level, worker.grace) from the same
 * sources; a bad file keeps the running values. Logs go to stderr, which
 * journald owns, so there is nothing to reopen. */
static void reload(struct daemon *d)
{
	warren_config *cfg;
	char why[512];

	cfg = cli_build_config(&d->cc, NULL, why, sizeof(why));
	if (cfg == NULL) {
		log_error("reload refused, keeping the running configuration: %s", why);
		return;
	}
	log_set_level((enum log_level)config_int(cfg, CFG_LOG_LEVEL));
	d->grace_ms = config_int(cfg, CFG_WORKER_GRACE);
	warren_config_free(d->cfg);
	d->cfg = cfg;
	log_info("configuration reloaded");
}

static void *stop_main(void *arg)
{
	struct daemon *d = arg;

	d->stop_result = warren_worker_stop(d->worker, (int)d->grace_ms);
	atomic_store(&d->stopped, true);
	return NULL;
}

/* SIGTERM: stop consuming and let handlers finish within the grace; a
 * second SIGTERM ends at once. Either way nothing unacked is lost: the
 * broker requeues it when the connection closes. */
static int drain(struct daemon *d)
{
	sdnotify_send("STOPPING=1\nSTATUS=draining");
	log_info("stopping: finishing in-flight requests, grace %lld ms", (long long)d->grace_ms);
	if (pthread_create(&d->stopper, NULL, stop_main, d) != 0) {
		return EXITCODE_FAILED;
	}
	while (!atomic_load(&d->stopped)) {
		int sig = wait_signal(d, 50);

		if (sig == SIGTERM || sig == SIGINT) {
			log_warn(
			    "second signal: exiting now; unfinished requests go back to the queue");
			_exit(EXITCODE_FAILED);
		}
	}
	pthread_join(d->stopper, NULL);
	if (d->stop_result != WARREN_OK) {
		log_warn("grace expired: exiting; unfinished requests go back to the queue");
		_exit(EXITCODE_FAILED);
	}
	warren_worker_free(d->worker);
	log_info("stopped");
	return 0;
}

static int serve(struct daemon *d)
{
	uint64_t wd_usec = sdnotify_watchdog_usec();
	int64_t tick = wd_usec > 0 ? (int64_t)(wd_usec / 2000) : 2000;

	sdnotify_send("READY=1");
	report(d);
	log_info("serving user.* with %lld handler threads",
	         (long long)config_int(d->cfg, CFG_WORKER_THREADS));
	for (;;) {
		int sig = wait_signal(d, tick);

		if (sig == SIGTERM || sig == SIGINT) {
			return drain(d);
		}
		if (sig == SIGHUP) {
			sdnotify_send("RELOADING=1");
			reload(d);
			sdnotify_send("READY=1");
		}
		if (wd_usec > 0 && making_progress(d)) {
			sdnotify_send("WATCHDOG=1");
		}
		report(d);
	}
}

int main(int argc, char **argv)
{
	struct daemon d = {0};
	char why[512];
	int status;

	log_set_program(PROG);
	status = cli_parse_daemon_args(argc, argv, PROG, &d.cc);
	if (status != 0) {
		return status;
	}
	if (load_config(&d, why, sizeof(why)) != 0) {
		fprintf(stderr, PROG ": %s\n", why);
		warren_config_free(d.cfg);
		return EXITCODE_CONFIG;
	}
	/* Signals are read by sigtimedwait in this thread only. */
	sigemptyset(&d.signals);
	sigaddset(&d.signals, SIGTERM);
	sigaddset(&d.signals, SIGINT);
	sigaddset(&d.signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &d.signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	status = migrate(&d);
	if (status != 0) {
		warren_config_free(d.cfg);
		return status < 0 ? EXITCODE_CONFIG : EXITCODE_OK;
	}
	status = start_worker(&d);
	if (status != 0) {
		warren_worker_free(d.worker);
		warren_config_free(d.cfg);
		return status;
	}
	status = serve(&d);
	warren_config_free(d.cfg);
	return status;
}
