/* bench_warren.c: warren's side of the benchmark, on the public API alone:
 * a worker pool serving bench.echo, and a client keeping a number of calls
 * in flight with warren_call_async.
 *
 *   bench_warren worker URL THREADS PREFETCH [SCHEME KEYDIR]
 *       worker.threads THREADS, worker.prefetch PREFETCH; bench.echo returns
 *       its params, on the worker's I/O thread (BENCH_INLINE=off: on the
 *       handler threads). Prints "ready" once consuming; stops on SIGTERM.
 *   bench_warren caller URL durable|transient IN_FLIGHT PAYLOAD MEASURE_MS WARMUP_MS PEER_PID
 *                [SCHEME KEYDIR]
 *       IN_FLIGHT calls outstanding, each completion starting the next one
 *       from its callback (on the client's I/O thread, as warren.h allows);
 *       params are a PAYLOAD-byte binary. Prints the benchlib result line.
 *   bench_warren scale URL IN_FLIGHT PAYLOAD TOTAL
 *       the caller's cost as calls in flight grow: IN_FLIGHT transient calls
 *       are made while no worker consumes, and the heap and RSS they hold
 *       are measured once their requests are confirmed; then a worker
 *       (this program) is started and the calls go on, IN_FLIGHT at a time,
 *       until TOTAL have been answered. Prints one "scale" line.
 *
 * SCHEME KEYDIR sign with security.scheme SCHEME (mac, ed25519): the
 * caller is key "app", the worker key "svc", with KEYDIR/SCHEME/ID.secret
 * and keyrings KEYDIR/SCHEME/ID-ring (bench.sh makes them with warren-key).
 * SCHEME+enc (mac+enc, ed25519+enc) also encrypts the bodies
 * (security.encrypt).
 * Exit status 0, 1 on failure, 2 on bad usage. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchlib.h"
#include "warren.h"

#define METHOD          "bench.echo"
#define CALL_TIMEOUT_MS 120000
#define DRAIN_NS        (60 * INT64_C(1000000000))

static void fail(const char *what, const char *why)
{
	fprintf(stderr, "bench_warren: %s: %s\n", what, why);
	exit(1);
}

static void set(warren_config *cfg, const char *key, const char *value)
{
	char why[300];

	if (warren_config_set(cfg, key, value, why, sizeof(why)) != WARREN_OK) {
		fail(key, why);
	}
}

static void set_int(warren_config *cfg, const char *key, long value)
{
	char text[32];

	snprintf(text, sizeof(text), "%ld", value);
	set(cfg, key, text);
}

static warren_config *config(const char *url)
{
	warren_config *cfg = warren_config_new();

	if (cfg == NULL) {
		fail("config", "out of memory");
	}
	set(cfg, "broker.url", url);
	set(cfg, "log.level", "warn");
	/* Batching on both hops is the default (warren(7) BATCHES);
	 * BENCH_BATCH=off turns both off. */
	if (getenv("BENCH_BATCH") != NULL && strcmp(getenv("BENCH_BATCH"), "off") == 0) {
		set(cfg, "client.batch", "");
		set(cfg, "client.batch_replies", "false");
	}
	warren_log_configure(cfg, "bench_warren");
	return cfg;
}

/* The security.* keys of key ID (see the header comment). */
static void sign_as(warren_config *cfg, const char *spec, const char *keydir, const char *id)
{
	char path[512], scheme[32];
	size_t n = strcspn(spec, "+");

	snprintf(scheme, sizeof(scheme), "%.*s", (int)n, spec);
	if (strcmp(spec + n, "+enc") == 0) {
		/* The caller names the service's key (ed25519); the worker needs none. */
		set(cfg, "security.encrypt",
		    strcmp(id, "app") == 0 && strcmp(scheme, "ed25519") == 0 ? "bench.*=svc" : "bench.*");
	}
	set(cfg, "security.scheme", scheme);
	set(cfg, "security.key_id", id);
	snprintf(path, sizeof(path), "%s/%s/%s.secret", keydir, scheme, id);
	set(cfg, "security.key_file", path);
	snprintf(path, sizeof(path), "%s/%s/%s-ring", keydir, scheme, id);
	set(cfg, "security.keyring", path);
}

/* ------------------------------------------------------------ worker */

static warren_status echo(warren_request *req, void *arg)
{
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

/* bench.echo never blocks: it runs on the worker's I/O thread
 * (warren_worker_handle_inline), as a user would register it;
 * BENCH_INLINE=off puts it on the handler threads instead. */
static warren_err handle(warren_worker *w)
{
	const char *inline_ = getenv("BENCH_INLINE");

	if (inline_ != NULL && strcmp(inline_, "off") == 0) {
		return warren_worker_handle(w, METHOD, echo, NULL);
	}
	return warren_worker_handle_inline(w, METHOD, echo, NULL);
}

static int worker(int argc, char **argv)
{
	warren_config *cfg;
	warren_worker *w = NULL;
	char why[300];
	sigset_t set_;
	int sig;

	if (argc != 5 && argc != 7) {
		return 2;
	}
	cfg = config(argv[2]);
	set(cfg, "worker.service", "bench");
	set_int(cfg, "worker.threads", bench_arg(argv[3], "THREADS"));
	set_int(cfg, "worker.prefetch", bench_arg(argv[4], "PREFETCH"));
	/* BENCH_REPLY_CACHE=0 turns the worker's reply cache off, to measure its cost. */
	if (getenv("BENCH_REPLY_CACHE") != NULL) {
		set(cfg, "worker.reply_cache_size", getenv("BENCH_REPLY_CACHE"));
	}
	if (argc == 7) {
		sign_as(cfg, argv[5], argv[6], "svc");
	}
	/* Blocked before any thread starts, so that sigwait alone takes them. */
	sigemptyset(&set_);
	sigaddset(&set_, SIGTERM);
	sigaddset(&set_, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set_, NULL);
	if (warren_worker_new(cfg, &w, why, sizeof(why)) != WARREN_OK || handle(w) != WARREN_OK ||
	    warren_worker_start(w, why, sizeof(why)) != WARREN_OK) {
		fail("starting the worker", why);
	}
	printf("ready\n");
	fflush(stdout);
	sigwait(&set_, &sig);
	warren_worker_stop(w, 2000);
	warren_worker_free(w);
	warren_config_free(cfg);
	return 0;
}

/* ------------------------------------------------------------ caller */

struct bench {
	warren_client *client;
	warren_value *params;
	warren_call_opts opts;
	atomic_bool measuring, stop;
	atomic_long in_flight;
	atomic_long started, answered; /* scale: calls started and answered */
	long total;                    /* scale: calls to start in all; 0: no limit */
	atomic_ulong calls, errors;
	struct bench_lat lat; /* written by the I/O thread while measuring */
};

struct ticket {
	struct bench *b;
	int64_t started;
};

static void on_done(warren_err err, warren_reply *reply, const char *errmsg, void *arg);

/* Starts the ticket's next call; false if none was started. */
static bool submit(struct bench *b, struct ticket *t)
{
	char why[300];

	if (atomic_load(&b->stop) ||
	    (b->total > 0 && atomic_fetch_add(&b->started, 1) >= b->total)) {
		return false;
	}
	t->started = bench_now_ns();
	if (warren_call_async(b->client, METHOD, b->params, &b->opts, on_done, t, why,
	                      sizeof(why)) != WARREN_OK) {
		if (atomic_fetch_add(&b->errors, 1) < 3) {
			fprintf(stderr, "bench_warren: call: %s\n", why);
		}
		return false;
	}
	return true;
}

/* On the client's I/O thread: records the call and starts the next. */
static void on_done(warren_err err, warren_reply *reply, const char *errmsg, void *arg)
{
	struct ticket *t = arg;
	struct bench *b = t->b;
	int64_t lat = bench_now_ns() - t->started;

	if (err != WARREN_OK) {
		if (atomic_fetch_add(&b->errors, 1) < 3) {
			fprintf(stderr, "bench_warren: call: %s\n", errmsg);
		}
	} else if (atomic_load(&b->measuring)) {
		bench_lat_add(&b->lat, lat);
		atomic_fetch_add(&b->calls, 1);
	}
	atomic_fetch_add(&b->answered, 1);
	warren_reply_free(reply);
	if (!submit(b, t)) {
		atomic_fetch_sub(&b->in_flight, 1);
	}
}

static void bench_start(struct bench *b, const warren_config *cfg, bool durable, size_t payload)
{
	unsigned char *body = bench_payload(payload);
	char why[300];

	if (warren_client_new(cfg, "bench", &b->client, why, sizeof(why)) != WARREN_OK) {
		fail("starting the client", why);
	}
	b->params = warren_bin(body, payload);
	free(body);
	if (b->params == NULL) {
		fail("params", "out of memory");
	}
	b->opts = (warren_call_opts){.timeout_ms = CALL_TIMEOUT_MS, .transient = !durable};
}

/* Starts n calls (tickets[0..n)), each going on from its callback. */
static void bench_launch(struct bench *b, struct ticket *tickets, long n)
{
	for (long i = 0; i < n; i++) {
		tickets[i].b = b;
		atomic_fetch_add(&b->in_flight, 1);
		if (!submit(b, &tickets[i])) {
			atomic_fetch_sub(&b->in_flight, 1);
		}
	}
}

/* Waits until no call is in flight, up to DRAIN_NS; false if some still are. */
static bool bench_drain(struct bench *b)
{
	int64_t give_up = bench_now_ns() + DRAIN_NS;

	while (atomic_load(&b->in_flight) > 0 && bench_now_ns() < give_up) {
		usleep(2000);
	}
	return atomic_load(&b->in_flight) == 0;
}

static int caller(int argc, char **argv)
{
	struct bench b = {0};
	struct bench_window w;
	warren_config *cfg;
	struct ticket *tickets;
	long in_flight;
	int64_t open_at, close_at;
	bool durable;

	if (argc != 9 && argc != 11) {
		return 2;
	}
	durable = strcmp(argv[3], "durable") == 0;
	in_flight = bench_arg(argv[4], "IN_FLIGHT");
	cfg = config(argv[2]);
	set_int(cfg, "client.max_in_flight", in_flight > 1024 ? in_flight : 1024);
	/* BENCH_REPLY_MODE: measure client.reply_mode other than its default. */
	if (getenv("BENCH_REPLY_MODE") != NULL) {
		set(cfg, "client.reply_mode", getenv("BENCH_REPLY_MODE"));
	}
	if (argc == 11) {
		sign_as(cfg, argv[9], argv[10], "app");
	}
	bench_start(&b, cfg, durable, (size_t)bench_arg(argv[5], "PAYLOAD"));
	tickets = calloc((size_t)in_flight, sizeof(*tickets));
	if (tickets == NULL) {
		fail("tickets", "out of memory");
	}
	open_at = bench_now_ns() + bench_arg(argv[7], "WARMUP_MS") * 1000000;
	close_at = open_at + bench_arg(argv[6], "MEASURE_MS") * 1000000;
	bench_launch(&b, tickets, in_flight);
	bench_sleep_until(open_at);
	bench_window_open(&w, (pid_t)bench_arg(argv[8], "PEER_PID"));
	atomic_store(&b.measuring, true);
	bench_sleep_until(close_at);
	atomic_store(&b.measuring, false);
	bench_window_close(&w);
	atomic_store(&b.stop, true);
	if (!bench_drain(&b)) {
		atomic_fetch_add(&b.errors, (unsigned long)atomic_load(&b.in_flight));
	}
	bench_report(durable ? "warren durable" : "warren transient", &w, atomic_load(&b.calls),
	             &b.lat, atomic_load(&b.errors));
	warren_client_free(b.client);
	warren_value_free(b.params);
	bench_lat_free(&b.lat);
	free(tickets);
	warren_config_free(cfg);
	return 0;
}

/* ------------------------------------------------------------ scale */

static int64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits until the client is idle and the heap stops changing (the
 * requests are published and confirmed, their bodies freed), up to 30 s.
 * The heap alone is not enough: it holds still while the I/O thread is
 * busy publishing a long batch. Returns the CPU time its own readings
 * took (mallinfo2 walks every free chunk), for the caller to leave out. */
static int64_t settle(void)
{
	int64_t last = -1, own = 0, give_up = bench_now_ns() + 30 * INT64_C(1000000000);
	int same = 0;

	while (same < 3 && bench_now_ns() < give_up) {
		int64_t before = bench_cpu_ns(0), t0, heap;
		bool idle;

		usleep(100000);
		t0 = thread_cpu_ns();
		/* Idle: the other threads took under 2 ms of CPU in the 100 ms. */
		idle = bench_cpu_ns(0) - before < 2000000;
		heap = bench_heap_bytes();
		same = idle && heap == last ? same + 1 : 0;
		last = heap;
		own += thread_cpu_ns() - t0;
	}
	return own;
}

static pid_t spawn_worker(const char *url)
{
	pid_t pid = fork();

	if (pid == 0) {
		/* It must not outlive this process, whatever ends it. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (freopen("/dev/null", "w", stdout) == NULL) {
			_exit(127);
		}
		execl("/proc/self/exe", "bench_warren", "worker", url, "4", "64", (char *)NULL);
		_exit(127);
	}
	if (pid < 0) {
		fail("fork", "cannot start the worker");
	}
	return pid;
}

static int scale(int argc, char **argv)
{
	struct bench b = {0};
	warren_config *cfg;
	struct ticket *tickets;
	long in_flight;
	size_t payload;
	int64_t heap0, rss0, cpu0, t0, heap1, rss1;
	pid_t worker_pid;
	int status;

	if (argc != 6) {
		return 2;
	}
	in_flight = bench_arg(argv[3], "IN_FLIGHT");
	payload = (size_t)bench_arg(argv[4], "PAYLOAD");
	b.total = bench_arg(argv[5], "TOTAL");
	if (in_flight < 1 || b.total < in_flight) {
		return 2;
	}
	cfg = config(argv[2]);
	set_int(cfg, "client.max_in_flight", in_flight > 1024 ? in_flight : 1024);
	bench_start(&b, cfg, false, payload);
	tickets = calloc((size_t)in_flight, sizeof(*tickets));
	if (tickets == NULL) {
		fail("tickets", "out of memory");
	}
	settle();
	heap0 = bench_heap_bytes();
	rss0 = bench_status_kb(0, "VmRSS");
	cpu0 = bench_cpu_ns(0);
	t0 = bench_now_ns();
	bench_launch(&b, tickets, in_flight);
	int64_t own = settle();
	heap1 = bench_heap_bytes();
	rss1 = bench_status_kb(0, "VmRSS");
	int64_t t_settled = bench_now_ns();
	worker_pid = spawn_worker(argv[2]);
	while (atomic_load(&b.answered) < b.total && bench_now_ns() - t0 < DRAIN_NS) {
		usleep(1000);
	}
	int64_t cpu = bench_cpu_ns(0) - cpu0 - own, secs_ns = bench_now_ns() - t0;
	printf("scale inflight=%ld calls=%ld secs=%.3f settle_secs=%.3f cpu_us=%.2f heap_b=%.0f "
	       "rss_b=%.0f errors=%lu\n",
	       in_flight, (long)atomic_load(&b.answered), (double)secs_ns / 1e9,
	       (double)(t_settled - t0) / 1e9, (double)cpu / 1e3 / (double)b.total,
	       (double)(heap1 - heap0) / (double)in_flight,
	       (double)(rss1 - rss0) * 1024.0 / (double)in_flight,
	       atomic_load(&b.errors) + (unsigned long)(b.total - atomic_load(&b.answered)));
	fflush(stdout);
	kill(worker_pid, SIGTERM);
	waitpid(worker_pid, &status, 0);
	atomic_store(&b.stop, true);
	bench_drain(&b);
	warren_client_free(b.client);
	warren_value_free(b.params);
	free(tickets);
	warren_config_free(cfg);
	return 0;
}

int main(int argc, char **argv)
{
	int rc = 2;

	if (argc >= 2 && strcmp(argv[1], "worker") == 0) {
		rc = worker(argc, argv);
	} else if (argc >= 2 && strcmp(argv[1], "caller") == 0) {
		rc = caller(argc, argv);
	} else if (argc >= 2 && strcmp(argv[1], "scale") == 0) {
		rc = scale(argc, argv);
	}
	if (rc == 2) {
		fprintf(
		    stderr,
		    "usage: bench_warren worker URL THREADS PREFETCH [SCHEME KEYDIR]\n"
		    "       bench_warren caller URL durable|transient IN_FLIGHT PAYLOAD MEASURE_MS "
		    "WARMUP_MS PEER_PID [SCHEME KEYDIR]\n"
		    "       bench_warren scale URL IN_FLIGHT PAYLOAD TOTAL\n");
	}
	return rc;
}
