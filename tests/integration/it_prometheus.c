/* it_prometheus.c: a real Prometheus (Debian's /usr/bin/prometheus, on a
 * private port with a private data directory) scrapes an example-service
 * (metrics.listen) and a caller under load (client.metrics_listen) every
 * second, with config/prometheus/warren-rules.yml loaded. Through its HTTP
 * API (/api/v1/query, /api/v1/rules): both targets are up, the caller was
 * seen with calls in flight, the counters it stored equal the calls made on
 * both sides, and every alerting rule loads and evaluates without error.
 * Every wait has a generous bound; nothing depends on how fast a scrape is.
 * Prometheus's log is printed at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "rpc-call/load.h"
#include "testenv.h"

#define RULES    "config/prometheus/warren-rules.yml"
#define APP      "it_prometheus"
#define WAIT_MS  60000 /* the bound of every wait: a slow shared machine */
#define SLEEP_MS 200   /* each call of the load: example.sleep this long */

static pid_t worker_pid, prom_pid;
static int worker_port, client_port, prom_port;
static char dir[64];

/* ------------------------------------------------------------ processes */

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
		abort();
	}
	close(fd);
	return ntohs(a.sin_port);
}

/* Alert rules in the rules file: its "- alert:" lines. */
static int count_alerts(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[512];
	int n = 0;

	if (f == NULL) {
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		n += strncmp(line + strspn(line, " "), "- alert:", 8) == 0;
	}
	fclose(f);
	return n;
}

/* DIR/prometheus.yml: both targets every second, the rules file loaded. */
static int write_config(const char *rules)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/prometheus.yml", dir);
	f = fopen(path, "w");
	if (f == NULL) {
		return -1;
	}
	fprintf(f,
	        "global:\n"
	        "  scrape_interval: 1s\n"
	        "  scrape_timeout: 1s\n"
	        "  evaluation_interval: 1s\n"
	        "rule_files:\n"
	        "  - %s\n"
	        "scrape_configs:\n"
	        "  - job_name: worker\n"
	        "    static_configs:\n"
	        "      - targets: ['127.0.0.1:%d']\n"
	        "  - job_name: caller\n"
	        "    static_configs:\n"
	        "      - targets: ['127.0.0.1:%d']\n",
	        rules, worker_port, client_port);
	return fclose(f);
}

/* prometheus in the background, its output in DIR/prometheus.log; it dies
 * with this process whatever becomes of the teardown. */
static pid_t start_prometheus(void)
{
	char config[128], data[128], listen[64], log[128];
	pid_t pid;

	snprintf(config, sizeof(config), "--config.file=%s/prometheus.yml", dir);
	snprintf(data, sizeof(data), "--storage.tsdb.path=%s/data", dir);
	snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d", prom_port);
	snprintf(log, sizeof(log), "%s/prometheus.log", dir);
	pid = fork();
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		execlp("prometheus", "prometheus", config, data, listen, "--log.level=warn",
		       (char *)NULL);
		fprintf(stderr, "cannot run prometheus: %s\n", strerror(errno));
		_exit(127);
	}
	return pid;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void print_log(void)
{
	char path[128], line[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/prometheus.log", dir);
	f = fopen(path, "r");
	printf("# prometheus.log:\n");
	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		printf("#   %s", line);
	}
	if (f != NULL) {
		fclose(f);
	}
	fflush(stdout);
}

static int setup(void **state)
{
	char listen[64], rules[PATH_MAX];

	if (realpath(RULES, rules) == NULL) {
		fprintf(stderr, "%s: %s (run from the source tree)\n", RULES, strerror(errno));
		return -1;
	}
	snprintf(dir, sizeof(dir), "/tmp/warren-prom.XXXXXX");
	if (mkdtemp(dir) == NULL) {
		return -1;
	}
	worker_port = free_port();
	client_port = free_port();
	prom_port = free_port();
	snprintf(listen, sizeof(listen), "metrics.listen=127.0.0.1:%d", worker_port);
	worker_pid =
	    testenv_spawn("example-service", (const char *const[]){"-o", listen, NULL}, true);
	if (worker_pid <= 0 || write_config(rules) != 0) {
		return -1;
	}
	prom_pid = start_prometheus();
	return prom_pid > 0 ? 0 : -1;
}

static int teardown(void **state)
{
	if (prom_pid > 0) {
		testenv_stop(prom_pid, SIGTERM);
	}
	if (worker_pid > 0) {
		testenv_stop(worker_pid, SIGTERM);
	}
	print_log();
	nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* ------------------------------------------------------------ HTTP API */

/* GET path from Prometheus over HTTP/1.0: the status code, the body in
 * *body (malloc'd); -1 when it cannot be reached (yet). */
static int http_get(const char *path, char **body)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons((uint16_t)prom_port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	size_t cap = 65536, n = 0, len;
	char *buf, *req, *start;
	int fd = socket(AF_INET, SOCK_STREAM, 0), code = -1;
	ssize_t got;

	*body = NULL;
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0) {
			close(fd);
		}
		return -1;
	}
	len = strlen(path) + 64;
	req = malloc(len);
	buf = malloc(cap);
	assert_non_null(req);
	assert_non_null(buf);
	snprintf(req, len, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	free(req);
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
	start = strstr(buf, "\r\n\r\n");
	if (start != NULL && sscanf(buf, "HTTP/1.%*d %d", &code) == 1) {
		*body = strdup(start + 4);
	}
	free(buf);
	return *body != NULL ? code : -1;
}

/* /api/v1/query?query=<expr, percent-encoded>. */
static char *query_path(const char *expr)
{
	static const char hex[] = "0123456789ABCDEF";
	char *p = malloc(strlen(expr) * 3 + 32), *o;

	assert_non_null(p);
	o = p + sprintf(p, "/api/v1/query?query=");
	for (const unsigned char *c = (const unsigned char *)expr; *c != '\0'; c++) {
		if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		    (*c >= '0' && *c <= '9') || strchr("-_.~", *c) != NULL) {
			*o++ = (char)*c;
		} else {
			*o++ = '%';
			*o++ = hex[*c >> 4];
			*o++ = hex[*c & 15];
		}
	}
	*o = '\0';
	return p;
}

/* The answer's JSON (status "success" asserted); NULL while Prometheus
 * does not answer. */
static json_t *api_get(const char *path)
{
	char *body;
	int code = http_get(path, &body);
	json_t *j;
	json_error_t jerr;
	const char *status;

	if (code < 0) {
		return NULL;
	}
	j = json_loads(body, 0, &jerr);
	status = j != NULL ? json_string_value(json_object_get(j, "status")) : NULL;
	if (code != 200 || status == NULL || strcmp(status, "success") != 0) {
		fail_msg("GET %s: %d %s", path, code, body);
	}
	free(body);
	return j;
}

/* The value of expr, an instant vector of at most one sample (NAN when
 * empty or while Prometheus does not answer). */
static double query(const char *expr)
{
	char *path = query_path(expr);
	json_t *j = api_get(path), *result;
	double v = NAN;

	free(path);
	if (j == NULL) {
		return NAN;
	}
	result = json_object_get(json_object_get(j, "data"), "result");
	if (json_array_size(result) > 1) {
		fail_msg("%s: %zu series, want one", expr, json_array_size(result));
	}
	if (json_array_size(result) == 1) {
		v = strtod(json_string_value(json_array_get(
		               json_object_get(json_array_get(result, 0), "value"), 1)),
		           NULL);
	}
	json_decref(j);
	return v;
}

/* Polls expr (every 250 ms, up to WAIT_MS) until it equals want; the last
 * value, printed. */
static double await_value(const char *expr, double want)
{
	int64_t until = testenv_mono_ms() + WAIT_MS;
	double v = query(expr);

	while (v != want && testenv_mono_ms() < until) {
		usleep(250000);
		v = query(expr);
	}
	printf("# %s = %g\n", expr, v);
	fflush(stdout);
	return v;
}

static void assert_value(const char *expr, double want)
{
	double v = await_value(expr, want);

	if (v != want) {
		fail_msg("%s: %g after %d s, want %g", expr, v, WAIT_MS / 1000, want);
	}
}

/* Waits until Prometheus answers /-/ready with 200; fails at once, its log
 * printed, when the process has ended (not installed: scripts/deps.sh). */
static void assert_prometheus_ready(void)
{
	int64_t until = testenv_mono_ms() + WAIT_MS;
	int status, code = -1;
	char *body = NULL;

	if (prom_pid <= 0) {
		fail_msg("prometheus is not running");
	}
	while (code != 200 && testenv_mono_ms() < until) {
		if (waitpid(prom_pid, &status, WNOHANG) == prom_pid) {
			prom_pid = 0;
			fail_msg(
			    "prometheus exited (status %d) before it was ready: its log follows",
			    status);
		}
		usleep(250000);
		free(body);
		code = http_get("/-/ready", &body);
	}
	free(body);
	if (code != 200) {
		fail_msg("prometheus on 127.0.0.1:%d: not ready after %d s (%d)", prom_port,
		         WAIT_MS / 1000, code);
	}
}

/* ------------------------------------------------------------ the load */

struct load_loop {
	warren_client *c;
	atomic_bool stop;
	int64_t calls, ok;
	char why[300]; /* a load that could not run; the test fails on it */
};

/* Rounds of 8 calls, 4 at a time, until told to stop. */
static void *load_loop(void *arg)
{
	struct load_loop *l = arg;
	warren_call_opts o = {.timeout_ms = 30000};
	warren_value *params = NULL;
	struct load_result r;
	char json[32];

	/* No cmocka assertion here: they may not jump out of another thread. */
	snprintf(json, sizeof(json), "{\"ms\":%d}", SLEEP_MS);
	if (warren_value_from_json(json, strlen(json), &params, NULL, 0) != WARREN_OK) {
		snprintf(l->why, sizeof(l->why), "bad params %s", json);
		return NULL;
	}
	while (!atomic_load(&l->stop)) {
		if (load_run(l->c, "example.sleep", params, &o, 8, 4, &r, l->why, sizeof(l->why)) !=
		    WARREN_OK) {
			break;
		}
		l->calls += r.calls;
		l->ok += r.by_status[WARREN_STATUS_OK];
	}
	warren_value_free(params);
	return NULL;
}

static warren_client *metrics_client(void)
{
	char listen[64], why[300];
	warren_config *cfg;
	warren_client *c = NULL;

	snprintf(listen, sizeof(listen), "client.metrics_listen=127.0.0.1:%d", client_port);
	cfg = testenv_config((const char *const[]){listen, NULL});
	if (warren_client_new(cfg, APP, &c, why, sizeof(why)) != WARREN_OK) {
		fail_msg("client: %s", why);
	}
	warren_config_free(cfg);
	return c;
}

/* ------------------------------------------------------------ the tests */

#define W "job=\"worker\",service=\"example\""
#define C "job=\"caller\",app=\"" APP "\""

static void test_prometheus_scrapes_a_worker_and_a_caller_under_load(void **state)
{
	struct load_loop l = {.c = metrics_client()};
	char expr[256];
	double seen;
	pthread_t t;

	/* Ready, both targets scraped, before any call: every count below is
	 * this test's own. */
	assert_prometheus_ready();
	assert_value("up{job=\"worker\"}", 1);
	assert_value("up{job=\"caller\"}", 1);
	assert_value("warren_worker_connected{" W "}", 1);
	assert_value("warren_client_connected{" C "}", 1);

	/* Load until a scrape has seen calls in flight. */
	assert_int_equal(pthread_create(&t, NULL, load_loop, &l), 0);
	seen = await_value("max_over_time(warren_client_in_flight{" C "}[10m]) > bool 0", 1);
	atomic_store(&l.stop, true);
	pthread_join(t, NULL);
	assert_string_equal(l.why, "");
	assert_true(seen == 1);
	printf("# the load: %lld calls, %lld OK\n", (long long)l.calls, (long long)l.ok);
	assert_true(l.calls >= 8);
	assert_int_equal(l.ok, l.calls);

	/* What Prometheus stored is what was done, on both sides. */
	snprintf(expr, sizeof(expr),
	         "warren_client_calls_total{" C ",method=\"example.sleep\",status=\"OK\"}");
	assert_value(expr, (double)l.calls);
	assert_value("warren_client_call_duration_seconds_count{" C ",method=\"example.sleep\"}",
	             (double)l.calls);
	assert_value("warren_worker_requests_total{" W ",method=\"example.sleep\",status=\"OK\"}",
	             (double)l.calls);
	assert_value("warren_worker_request_duration_seconds_count{" W ",method=\"example.sleep\"}",
	             (double)l.calls);
	/* Each handler slept 200 ms: none ran under 0.1 s. */
	assert_value("warren_worker_request_duration_seconds_bucket{" W
	             ",method=\"example.sleep\",le=\"0.1\"}",
	             0);
	assert_value("warren_client_in_flight{" C "}", 0);
	assert_value("sum(warren_worker_dead_letters_total{" W "})", 0);
	assert_value("count(warren_worker_dead_letters_total{" W "})", 9);
	assert_value("warren_client_late_replies_total{" C "}", 0);
	assert_value("up{job=\"worker\"}", 1);
	assert_value("up{job=\"caller\"}", 1);
	warren_client_free(l.c);
}

/* Rules whose last evaluation has come (lastEvaluation is Go's zero time
 * before the first); each is checked for health "ok" and no error. */
static size_t evaluated_rules(json_t *j, size_t *healthy, size_t *total)
{
	json_t *groups = json_object_get(json_object_get(j, "data"), "groups"), *g, *r;
	size_t i, k, done = 0;

	*healthy = *total = 0;
	json_array_foreach(groups, i, g)
	{
		json_array_foreach(json_object_get(g, "rules"), k, r)
		{
			const char *last = json_string_value(json_object_get(r, "lastEvaluation"));
			const char *health = json_string_value(json_object_get(r, "health"));
			const char *err = json_string_value(json_object_get(r, "lastError"));

			(*total)++;
			done += last != NULL && strncmp(last, "0001-", 5) != 0;
			if (health != NULL && strcmp(health, "ok") == 0 &&
			    (err == NULL || *err == '\0')) {
				(*healthy)++;
			} else {
				printf("# rule %s: health %s, lastError %s\n",
				       json_string_value(json_object_get(r, "name")), health,
				       err != NULL ? err : "");
			}
		}
	}
	return done;
}

static void test_every_alerting_rule_loads_and_evaluates_without_error(void **state)
{
	int want = count_alerts(RULES);
	int64_t until = testenv_mono_ms() + WAIT_MS;
	size_t done = 0, healthy = 0, total = 0;
	json_t *j = NULL;

	assert_true(want >= 15);
	assert_prometheus_ready();
	while (testenv_mono_ms() < until) {
		json_decref(j);
		j = api_get("/api/v1/rules?type=alert");
		if (j != NULL) {
			done = evaluated_rules(j, &healthy, &total);
			if (total == (size_t)want && done == total) {
				break;
			}
		}
		usleep(250000);
	}
	printf("# rules: %zu loaded, %zu evaluated, %zu healthy; the file has %d\n", total, done,
	       healthy, want);
	json_decref(j);
	assert_int_equal(total, want);
	assert_int_equal(done, want);
	assert_int_equal(healthy, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prometheus_scrapes_a_worker_and_a_caller_under_load),
	    cmocka_unit_test(test_every_alerting_rule_loads_and_evaluates_without_error),
	};

	return cmocka_run_group_tests_name("it_prometheus", tests, setup, teardown);
}
