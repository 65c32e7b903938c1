/* it_client_metrics.c: a caller's Prometheus endpoint (client.metrics_listen)
 * against the private broker and a real example-service: the exact counts by
 * method and status after a known load (replies OK and NOT_FOUND, timeouts,
 * an unroutable method, an unknown one), the duration histogram, the late
 * replies and republishes, calls in flight during a load and none after it,
 * 404 elsewhere, and the errors of an address that cannot be served. Each
 * scrape is printed for the log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc-call/load.h"
#include "testenv.h"

static pid_t worker_pid;

static int setup(void **state)
{
	worker_pid = testenv_spawn("example-service",
	                           (const char *const[]){"-o", "worker.threads=4", NULL}, true);
	return worker_pid > 0 ? 0 : -1;
}

static int teardown(void **state)
{
	if (worker_pid > 0) {
		testenv_stop(worker_pid, SIGTERM);
	}
	return 0;
}

/* ------------------------------------------------------------ helpers */

/* A socket bound to a free port of 127.0.0.1; *port says which. With
 * listening, it holds the port (the caller closes it). */
static int bind_free_port(int *port, bool listening)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	if (listening) {
		assert_int_equal(listen(fd, 1), 0);
	}
	*port = ntohs(a.sin_port);
	return fd;
}

static int free_port(void)
{
	int port;

	close(bind_free_port(&port, false));
	return port;
}

/* A client of the test broker serving its metrics on 127.0.0.1:port. */
static warren_client *metrics_client(const char *app, int port)
{
	char listen[64];
	warren_config *cfg;
	warren_client *c = NULL;
	char why[300];

	snprintf(listen, sizeof(listen), "client.metrics_listen=127.0.0.1:%d", port);
	cfg = testenv_config((const char *const[]){listen, NULL});
	if (warren_client_new(cfg, app, &c, why, sizeof(why)) != WARREN_OK) {
		fail_msg("client: %s", why);
	}
	warren_config_free(cfg);
	return c;
}

/* GET path from 127.0.0.1:port over HTTP/1.0: the whole response (status
 * line, headers, body), malloc'd. */
static char *http_get(int port, const char *path)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	char req[256];
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ssize_t got;

	assert_non_null(buf);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while ((got = read(fd, buf + n, cap - n - 1)) > 0) {
		n += (size_t)got;
		if (n + 1 == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
	}
	close(fd);
	buf[n] = '\0';
	return buf;
}

/* The body of a 200 answer to GET /metrics, printed for the log. */
static char *scrape(int port, const char *when)
{
	char *resp = http_get(port, "/metrics");
	char *body = strstr(resp, "\r\n\r\n");

	assert_non_null(body);
	assert_memory_equal(resp + 8, " 200 ", 5); /* HTTP/1.x 200 OK */
	body = strdup(body + 4);
	free(resp);
	printf("# scrape of http://127.0.0.1:%d/metrics %s:\n", port, when);
	for (const char *l = body; *l != '\0';) {
		const char *nl = strchr(l, '\n');
		int len = nl != NULL ? (int)(nl - l) : (int)strlen(l);

		printf("#   %.*s\n", len, l);
		l += len + (nl != NULL);
	}
	fflush(stdout);
	return body;
}

/* The value of the series named exactly so (NAME{LABELS}), or -1 when absent. */
static long long metric(const char *text, const char *series)
{
	size_t len = strlen(series);

	for (const char *l = text; l != NULL && *l != '\0';
	     l = strchr(l, '\n'), l = l ? l + 1 : l) {
		if (strncmp(l, series, len) == 0 && l[len] == ' ') {
			return strtoll(l + len + 1, NULL, 10);
		}
	}
	return -1;
}

/* Lines of text that start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
	int n = 0;

	for (const char *l = text; l != NULL && *l != '\0';
	     l = strchr(l, '\n'), l = l ? l + 1 : l) {
		n += strncmp(l, prefix, strlen(prefix)) == 0;
	}
	return n;
}

/* count calls of method (params from JSON) with in_flight at a time; what
 * they ended with. */
static struct load_result load(warren_client *c, const char *method, const char *json,
                               int64_t timeout_ms, int64_t count, int in_flight)
{
	warren_call_opts o = {.timeout_ms = timeout_ms};
	warren_value *params = NULL;
	struct load_result r;
	char why[300];

	if (json != NULL) {
		assert_int_equal(warren_value_from_json(json, strlen(json), &params, NULL, 0),
		                 WARREN_OK);
	}
	assert_int_equal(load_run(c, method, params, &o, count, in_flight, &r, why, sizeof(why)),
	                 WARREN_OK);
	warren_value_free(params);
	return r;
}

/* ------------------------------------------------------------ the tests */

#define APP "app=\"it_client_metrics\""

/* A series and the value it must have. */
struct want {
	const char *series;
	long long value;
};

static void assert_metrics(const char *text, const struct want *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		long long got = metric(text, w[i].series);

		if (got != w[i].value) {
			fail_msg("%s: got %lld, want %lld", w[i].series, got, w[i].value);
		}
	}
}

#define CALLS(m, st) "warren_client_calls_total{" APP ",method=\"" m "\",status=\"" st "\"}"
#define COUNT(m)     "warren_client_call_duration_seconds_count{" APP ",method=\"" m "\"}"
#define BUCKET(m, le)                                                                              \
	"warren_client_call_duration_seconds_bucket{" APP ",method=\"" m "\",le=\"" le "\"}"

static const struct want after_known_load[] = {
    {CALLS("example.echo", "OK"), 200},
    {CALLS("example.fail", "NOT_FOUND"), 20},
    {CALLS("example.sleep", "DEADLINE_EXCEEDED"), 3},
    {CALLS("nosuch.method", "UNAVAILABLE"), 1},
    {CALLS("example.nope", "UNIMPLEMENTED"), 1},
    /* Durations: one per call; the timed-out calls took their 100 ms deadline. */
    {COUNT("example.echo"), 200},
    {BUCKET("example.echo", "+Inf"), 200},
    {COUNT("example.fail"), 20},
    {COUNT("example.sleep"), 3},
    {BUCKET("example.sleep", "0.05"), 0},
    {BUCKET("example.sleep", "1"), 3},
    {COUNT("nosuch.method"), 1},
    {COUNT("example.nope"), 1},
    {"warren_client_in_flight{" APP "}", 0},
    {"warren_client_late_replies_total{" APP "}", 3},
    {"warren_client_unknown_replies_total{" APP "}", 0},
    {"warren_client_untrusted_replies_total{" APP "}", 0},
    {"warren_client_republished_total{" APP "}", 2},
    /* No connection was lost: nothing was sent again. */
    {"warren_client_resent_total{" APP "}", 0},
    /* Every call of the load is durable: none took the fast lane. */
    {"warren_client_fast_sent_total{" APP "}", 0},
    {"warren_client_fast_fallbacks_total{" APP "}", 0},
    {"warren_client_reconnects_total{" APP "}", 0},
    {"warren_client_blocked_seconds_total{" APP "}", 0},
    {"warren_client_connected{" APP "}", 1},
};

static const struct want after_sleeps[] = {
    {"warren_client_in_flight{" APP "}", 0},
    {CALLS("example.sleep", "OK"), 40},
    {BUCKET("example.sleep", "0.1"), 0},
    {BUCKET("example.sleep", "5"), 40},
};

/* The numbers of a known load, exactly. */
static void test_the_scrape_counts_a_known_load_exactly(void **state)
{
	int port = free_port();
	warren_client *c = metrics_client("it_client_metrics", port);
	warren_client_stats st;
	struct load_result r;
	char *text, *other;

	r = load(c, "example.echo", "{\"n\":1}", 5000, 200, 8);
	assert_int_equal(r.by_status[WARREN_STATUS_OK], 200);
	r = load(c, "example.fail", "{\"code\":\"NOT_FOUND\",\"message\":\"x\"}", 5000, 20, 4);
	assert_int_equal(r.by_status[WARREN_STATUS_NOT_FOUND], 20);
	/* Three calls that end at their deadline; their replies come later. */
	r = load(c, "example.sleep", "{\"ms\":400}", 100, 3, 3);
	assert_int_equal(r.by_err[WARREN_ERR_TIMEOUT], 3);
	/* No queue is bound: published three times (two republishes), then UNAVAILABLE. */
	r = load(c, "nosuch.method", NULL, 10000, 1, 1);
	assert_int_equal(r.by_err[WARREN_ERR_UNROUTABLE], 1);
	/* Routed, but the service has no such method: its reply says so. */
	r = load(c, "example.nope", NULL, 5000, 1, 1);
	assert_int_equal(r.by_status[WARREN_STATUS_UNIMPLEMENTED], 1);
	for (int i = 0; i < 250; i++) {
		warren_client_get_stats(c, &st);
		if (st.late_replies >= 3) {
			break;
		}
		usleep(20000);
	}

	text = scrape(port, "after the known load");
	assert_metrics(text, after_known_load,
	               sizeof(after_known_load) / sizeof(after_known_load[0]));
	assert_int_equal(count_lines(text, "warren_client_calls_total{"), 5);
	assert_int_equal(count_lines(text, "warren_client_call_duration_seconds_count{"), 5);
	/* Every family has its HELP and TYPE. */
	assert_int_equal(count_lines(text, "# HELP warren_client_"), 13);
	assert_int_equal(count_lines(text, "# TYPE warren_client_"), 13);
	assert_int_equal(count_lines(text, "# TYPE warren_client_call_duration_seconds histogram"),
	                 1);
	assert_non_null(strstr(text, "# TYPE warren_client_calls_total counter\n"));
	assert_non_null(strstr(text, "# TYPE warren_client_in_flight gauge\n"));
	free(text);

	text = http_get(port, "/metrics");
	assert_non_null(
	    strstr(text, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	other = http_get(port, "/other");
	assert_memory_equal(other + 8, " 404 ", 5);
	free(other);
	free(text);
	warren_client_free(c);
}

struct background {
	warren_client *c;
	struct load_result r;
};

static void *sleeps(void *arg)
{
	struct background *b = arg;

	b->r = load(b->c, "example.sleep", "{\"ms\":250}", 10000, 40, 40);
	return NULL;
}

/* A scrape while 40 calls wait for a 250 ms handler each (four at a time):
 * all 40 are in flight; after them, none. */
static void test_calls_in_flight_show_during_a_load_and_none_after(void **state)
{
	int port = free_port();
	struct background b = {.c = metrics_client("it_client_metrics", port)};
	warren_client_stats st = {0};
	pthread_t t;
	char *text;

	assert_int_equal(pthread_create(&t, NULL, sleeps, &b), 0);
	for (int i = 0; i < 2000 && st.in_flight < 40; i++) {
		warren_client_get_stats(b.c, &st);
		usleep(1000);
	}
	text = scrape(port, "during a load of 40 calls");
	assert_int_equal(metric(text, "warren_client_in_flight{" APP "}"), 40);
	assert_int_equal(count_lines(text, "warren_client_calls_total{"), 0);
	free(text);
	pthread_join(t, NULL);
	assert_int_equal(b.r.by_status[WARREN_STATUS_OK], 40);

	text = scrape(port, "after it");
	assert_metrics(text, after_sleeps, sizeof(after_sleeps) / sizeof(after_sleeps[0]));
	free(text);
	warren_client_free(b.c);
}

/* warren_client_new with an address it cannot serve: the error names the
 * key, and comes before any connection (the broker URL here refuses). */
static void assert_client_fails(const char *listen, warren_err want, const char *want_msg)
{
	char arg[128], why[300] = "";
	warren_config *cfg = testenv_config(
	    (const char *const[]){"broker.url=amqp://guest:guest@127.0.0.1:1", NULL});
	warren_client *c = (warren_client *)&c; /* anything but NULL: it must be reset */

	snprintf(arg, sizeof(arg), "client.metrics_listen=%s", listen);
	assert_int_equal(warren_config_set_arg(cfg, arg, why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_client_new(cfg, "it_client_metrics", &c, why, sizeof(why)), want);
	assert_string_equal(why, want_msg);
	assert_null(c);
	warren_config_free(cfg);
}

static void test_an_address_that_cannot_be_served_fails_warren_client_new(void **state)
{
	int port, fd = bind_free_port(&port, true);
	char listen[64], want[200];

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(want, sizeof(want),
	         "client.metrics_listen: cannot listen on 127.0.0.1:%d: Address already in use",
	         port);
	assert_client_fails(listen, WARREN_ERR_SYSTEM, want);
	close(fd);
	/* No name has spaces: refused without asking DNS. */
	assert_client_fails("not a host:9465", WARREN_ERR_CONFIG,
	                    "client.metrics_listen: not a host: Name or service not known");
	assert_client_fails("192.0.2.1:9465", WARREN_ERR_SYSTEM,
	                    "client.metrics_listen: cannot listen on 192.0.2.1:9465: Cannot assign "
	                    "requested address");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_the_scrape_counts_a_known_load_exactly),
	    cmocka_unit_test(test_calls_in_flight_show_during_a_load_and_none_after),
	    cmocka_unit_test(test_an_address_that_cannot_be_served_fails_warren_client_new),
	};

	return cmocka_run_group_tests_name("it_client_metrics", tests, setup, teardown);
}
