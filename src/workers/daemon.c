/* daemon.c: warren_daemon, the process around a worker as systemd runs it:
 * the standard options, the configuration (the library's keys and the
 * program's), logging, signals (SIGTERM drains, a second one ends it,
 * SIGHUP reloads what the table marks reloadable), sd_notify with the
 * watchdog, and an exit status for each outcome (exitcodes.h). */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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
#include "sdnotify.h"
#include "warren.h"

struct warren_daemon {
	char program[64];
	char service[65];     /* worker.service when the configuration leaves it empty */
	char dependency[64];  /* what the breaker protects, for STATUS */
	struct cli_config cc; /* -c and -o, pointing into argv */
	warren_config *keys;  /* every key at its default, the program's added */
	warren_config *cfg;   /* the running configuration, once loaded */
	warren_worker *worker;
	int status;       /* of a failed load, kept for warren_daemon_run */
	bool stop;        /* SIGTERM or SIGINT taken before serving */
	sigset_t signals; /* taken by sigtimedwait on the daemon's thread */
	warren_reload_fn on_reload;
	void *reload_arg;
	warren_worker_stats seen; /* the watchdog's last look */
	/* Stopping, run by its own thread while signals keep being read. */
	pthread_t stopper;
	atomic_bool stopped;
	warren_err stop_result;
};

int warren_daemon_new(int argc, char **argv, const char *program, const char *service,
                      warren_daemon **out)
{
	warren_daemon *d;
	int status;

	if (out == NULL || program == NULL) {
		fprintf(stderr, "warren_daemon_new: program and out must not be NULL\n");
		return EXITCODE_INTERNAL;
	}
	*out = NULL;
	d = calloc(1, sizeof(*d));
	if (d == NULL || (d->keys = warren_config_new()) == NULL) {
		fprintf(stderr, "%s: out of memory\n", program);
		free(d);
		return EXITCODE_INTERNAL;
	}
	snprintf(d->program, sizeof(d->program), "%s", program);
	snprintf(d->service, sizeof(d->service), "%s", service != NULL ? service : "");
	snprintf(d->dependency, sizeof(d->dependency), "a dependency");
	log_set_program(d->program);
	optind = 0; /* a fresh scan, whoever used getopt before */
	status = cli_parse_daemon_args(argc, argv, d->program, &d->cc);
	if (status != EXITCODE_OK || d->cc.done) {
		warren_daemon_free(d);
		return status;
	}
	sigemptyset(&d->signals);
	sigaddset(&d->signals, SIGTERM);
	sigaddset(&d->signals, SIGINT);
	sigaddset(&d->signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &d->signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	*out = d;
	return EXITCODE_OK;
}

warren_err warren_daemon_add_key(warren_daemon *d, const warren_key *key, char *errstr,
                                 size_t errlen)
{
	if (d->cfg != NULL) {
		snprintf(errstr, errlen,
		         "warren_daemon_add_key: the configuration is already loaded");
		return WARREN_ERR_INVALID;
	}
	return warren_config_add_key(d->keys, key, errstr, errlen);
}

/* Defaults, the file, the overrides; worker.service defaulted. NULL with
 * errstr. */
static warren_config *build_config(warren_daemon *d, char *errstr, size_t errlen)
{
	warren_config *cfg = config_dup(d->keys);

	if (cfg == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	if (cli_fill_config(cfg, &d->cc, NULL, errstr, errlen) != 0) {
		warren_config_free(cfg);
		return NULL;
	}
	if (config_str(cfg, CFG_WORKER_SERVICE)[0] == '\0' && d->service[0] != '\0' &&
	    warren_config_set(cfg, "worker.service", d->service, errstr, errlen) != WARREN_OK) {
		warren_config_free(cfg);
		return NULL;
	}
	return cfg;
}

/* The exit status of a worker that cannot be created or started: a
 * configuration error is the operator's to fix, said plainly on stderr as
 * for a bad file; anything else is logged. */
static int start_failed(warren_daemon *d, warren_err err, const char *why)
{
	int status = exitcode_for_start(err);

	if (status == EXITCODE_CONFIG) {
		fprintf(stderr, "%s: %s\n", d->program, why);
	} else {
		log_error("cannot start: %s", why);
	}
	return status;
}

int warren_daemon_load(warren_daemon *d)
{
	char why[512];
	warren_err err;

	if (d == NULL) {
		return EXITCODE_INTERNAL;
	}
	if (d->status != EXITCODE_OK || d->cfg != NULL) {
		return d->status;
	}
	d->cfg = build_config(d, why, sizeof(why));
	if (d->cfg == NULL) {
		fprintf(stderr, "%s: %s\n", d->program, why);
		return d->status = EXITCODE_CONFIG;
	}
	warren_log_configure(d->cfg, NULL);
	err = warren_worker_new(d->cfg, &d->worker, why, sizeof(why));
	if (err != WARREN_OK) {
		d->status = start_failed(d, err, why);
	}
	return d->status;
}

const warren_config *warren_daemon_config(const warren_daemon *d)
{
	return d != NULL ? d->cfg : NULL;
}

warren_worker *warren_daemon_worker(warren_daemon *d)
{
	return d != NULL ? d->worker : NULL;
}

void warren_daemon_set_dependency(warren_daemon *d, const char *name)
{
	snprintf(d->dependency, sizeof(d->dependency), "%s", name != NULL ? name : "a dependency");
}

void warren_daemon_on_reload(warren_daemon *d, warren_reload_fn fn, void *arg)
{
	d->on_reload = fn;
	d->reload_arg = arg;
}

void warren_daemon_status(warren_daemon *d, const char *fmt, ...)
{
	char text[1024] = "STATUS=";
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text + 7, sizeof(text) - 7, fmt, ap);
	va_end(ap);
	sdnotify_send(text);
}

/* Waits up to ms for one of d->signals: the signal, or 0. */
static int wait_signal(warren_daemon *d, int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	int sig = sigtimedwait(&d->signals, NULL, &ts);

	return sig > 0 ? sig : 0;
}

/* SIGHUP: the configuration read again from the same sources, and every
 * key its row marks reloadable taken from it (config_reload); a bad file
 * keeps the running values. Logs go to stderr, which journald owns, so
 * there is nothing to reopen. */
static void reload(warren_daemon *d)
{
	char why[512], changed[1024], ignored[1024], extra[1100];
	warren_config *fresh;

	if (d->cfg == NULL) {
		return;
	}
	fresh = build_config(d, why, sizeof(why));
	if (fresh == NULL) {
		log_error("reload refused, keeping the running configuration: %s", why);
		return;
	}
	if (config_reload(d->cfg, fresh, changed, sizeof(changed), ignored, sizeof(ignored)) !=
	    WARREN_OK) {
		log_error("reload: out of memory; some keys keep their running values");
	}
	warren_config_free(fresh);
	warren_log_configure(d->cfg, NULL);
	if (ignored[0] != '\0') {
		log_warn("not reloaded, a restart applies them: %s", ignored);
	}
	snprintf(extra, sizeof(extra), "keys=%s", changed[0] != '\0' ? changed : "none");
	log_event(LOG_INFO, extra, "configuration reloaded");
	if (d->on_reload != NULL) {
		d->on_reload(d->cfg, d->reload_arg);
	}
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool warren_daemon_sleep(warren_daemon *d, int64_t ms)
{
	int64_t until = mono_ms() + ms;

	while (!d->stop) {
		int64_t left = until - mono_ms();
		int sig;

		if (left <= 0) {
			break;
		}
		sig = wait_signal(d, left);
		if (sig == SIGHUP) {
			reload(d);
		} else if (sig != 0) {
			d->stop = true;
		}
	}
	return d->stop;
}

/* Both halves of the worker move: the I/O thread turns, and the pool has
 * a free thread or finished something since the last look. */
static bool making_progress(warren_daemon *d)
{
	warren_worker_stats now;
	bool io, pool;

	warren_worker_get_stats(d->worker, &now);
	io = now.io_loops != d->seen.io_loops;
	pool = now.in_progress < (uint64_t)now.threads || now.completed != d->seen.completed;
	d->seen = now;
	return io && pool;
}

static void report(warren_daemon *d)
{
	warren_worker_stats s;
	char state[400];

	warren_worker_get_stats(d->worker, &s);
	if (s.breaker_open) {
		snprintf(state, sizeof(state), "paused, %s keeps failing (%s); probing",
		         d->dependency, s.breaker_error);
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

static void *stop_main(void *arg)
{
	warren_daemon *d = arg;

	d->stop_result = warren_worker_stop(d->worker, (int)config_int(d->cfg, CFG_WORKER_GRACE));
	atomic_store(&d->stopped, true);
	return NULL;
}

/* What systemd is asked for beyond worker.grace at a drain: the stop's
 * own work after the grace (closing the connection, freeing). */
#define DRAIN_MARGIN_MS 5000

/* The drain's wait for the stopper, in 50 ms steps: a second SIGTERM ends
 * at once, a SIGHUP reloads, the watchdog is fed as while serving. */
static void await_stopped(warren_daemon *d, int64_t wd_ms)
{
	int64_t next_wd = mono_ms() + wd_ms;

	while (!atomic_load(&d->stopped)) {
		int sig = wait_signal(d, 50);

		if (sig == SIGTERM || sig == SIGINT) {
			log_warn(
			    "second signal: exiting now; unfinished requests go back to the queue");
			_exit(EXITCODE_FAILED);
		}
		if (sig == SIGHUP) {
			sdnotify_send("RELOADING=1");
			reload(d);
			sdnotify_send("STOPPING=1");
		}
		if (wd_ms > 0 && mono_ms() >= next_wd) {
			if (making_progress(d)) {
				sdnotify_send("WATCHDOG=1");
			}
			next_wd = mono_ms() + wd_ms;
		}
	}
}

/* SIGTERM: stop consuming and let handlers finish within the grace; a
 * second SIGTERM ends at once. Either way nothing unacked is lost: the
 * broker requeues it when the connection closes. systemd is asked for the
 * grace (EXTEND_TIMEOUT_USEC: a TimeoutStopSec= shorter than worker.grace
 * no longer kills the drain) and the watchdog is fed while the drain
 * makes progress. _exit, not exit: handler threads still running must not
 * see the process torn down under them. */
static int drain(warren_daemon *d)
{
	int64_t grace = config_int(d->cfg, CFG_WORKER_GRACE);
	uint64_t wd_usec = sdnotify_watchdog_usec();

	sdnotify_send("STOPPING=1\nSTATUS=draining");
	sdnotify_sendf("EXTEND_TIMEOUT_USEC=%llu",
	               (unsigned long long)(grace + DRAIN_MARGIN_MS) * 1000ULL);
	log_info("stopping: finishing in-flight requests, grace %lld ms", (long long)grace);
	if (pthread_create(&d->stopper, NULL, stop_main, d) != 0) {
		return EXITCODE_INTERNAL;
	}
	await_stopped(d, wd_usec > 0 ? (int64_t)(wd_usec / 2000) : 0);
	pthread_join(d->stopper, NULL);
	if (d->stop_result != WARREN_OK) {
		log_warn("grace expired: exiting; unfinished requests go back to the queue");
		_exit(EXITCODE_FAILED);
	}
	log_info("stopped");
	return EXITCODE_OK;
}

/* The watchdog is fed at half its interval; without one, STATUS is
 * refreshed every 2 s. */
static int serve(warren_daemon *d)
{
	uint64_t wd_usec = sdnotify_watchdog_usec();
	int64_t tick = wd_usec > 0 ? (int64_t)(wd_usec / 2000) : 2000;

	sdnotify_send("READY=1");
	report(d);
	log_info("serving %s.* with %lld handler threads", config_str(d->cfg, CFG_WORKER_SERVICE),
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

int warren_daemon_run(warren_daemon *d)
{
	int status = warren_daemon_load(d);
	char why[512];
	warren_err err;

	if (d == NULL) {
		return status;
	}
	if (status == EXITCODE_OK && d->stop) {
		log_info("stopped before serving");
	} else if (status == EXITCODE_OK) {
		err = warren_worker_start(d->worker, why, sizeof(why));
		status = err == WARREN_OK ? serve(d) : start_failed(d, err, why);
	}
	warren_daemon_free(d);
	return status;
}

void warren_daemon_free(warren_daemon *d)
{
	if (d == NULL) {
		return;
	}
	warren_worker_free(d->worker);
	warren_config_free(d->cfg);
	warren_config_free(d->keys);
	free(d);
}
