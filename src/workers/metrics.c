/* metrics.c: a worker's Prometheus metrics. Handler and I/O threads count
 * under the worker's mu; libmicrohttpd's own thread answers GET /metrics with
 * a snapshot taken under the same mutex, in the text exposition format
 * 0.0.4. Nothing here touches AMQP. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "deadletter.h"
#include "errstr.h"
#include "worker_int.h"

static const double bucket_bounds[METRICS_NBUCKETS] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
static const char *const bucket_names[METRICS_NBUCKETS] = {"0.001", "0.005", "0.01", "0.05",
                                                           "0.1",   "0.5",   "1",    "5"};
static const char *const reasons[METRICS_NREASONS] = {
    DL_R_UNDECODABLE, DL_R_BAD_ENVELOPE,    DL_R_UNKNOWN_METHOD, DL_R_CRASHED,
    DL_R_RETRIES,     DL_R_HANDLER_TIMEOUT, DL_R_BAD_SIGNATURE,  DL_R_NOT_ALLOWED};

/* ------------------------------------------------------------ recording */

void metrics_record_call(struct warren_worker *w, const struct method *m, int status,
                         double seconds)
{
	/* Methods are fixed once the worker started: the slot is stable. */
	struct method_metrics *mm = &((struct method *)m)->metrics;
	int b = 0;

	while (b < METRICS_NBUCKETS && seconds > bucket_bounds[b]) {
		b++;
	}
	pthread_mutex_lock(&w->mu);
	if (status >= 0 && status < METRICS_NSTATUS) {
		mm->by_status[status]++;
	}
	if (b < METRICS_NBUCKETS) {
		mm->buckets[b]++;
	}
	mm->count++;
	mm->sum += seconds;
	pthread_mutex_unlock(&w->mu);
}

void metrics_record_dead_letter(struct warren_worker *w, const char *reason)
{
	for (int i = 0; i < METRICS_NREASONS; i++) {
		if (reason != NULL && strcmp(reason, reasons[i]) == 0) {
			worker_count(w, &w->dead_by_reason[i], 1);
			return;
		}
	}
}

/* ------------------------------------------------------------ rendering */

/* What one scrape shows, copied under mu so the text is written without it. */
struct snapshot {
	warren_worker_stats stats;
	uint64_t dead[METRICS_NREASONS];
	struct method_metrics *methods; /* nmethods, in registration order */
};

static bool take_snapshot(struct warren_worker *w, struct snapshot *s)
{
	s->methods = calloc(w->nmethods > 0 ? w->nmethods : 1, sizeof(*s->methods));
	if (s->methods == NULL) {
		return false;
	}
	warren_worker_get_stats(w, &s->stats);
	pthread_mutex_lock(&w->mu);
	memcpy(s->dead, w->dead_by_reason, sizeof(s->dead));
	for (size_t i = 0; i < w->nmethods; i++) {
		s->methods[i] = w->methods[i].metrics;
	}
	pthread_mutex_unlock(&w->mu);
	return true;
}

/* A label value, escaped as the exposition format wants. */
static void put_label(FILE *f, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"') {
			fprintf(f, "\\%c", *v);
		} else if (*v == '\n') {
			fputs("\\n", f);
		} else {
			fputc(*v, f);
		}
	}
}

static void put_head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_scalar(FILE *f, const struct warren_worker *w, const char *name, const char *type,
                       const char *help, uint64_t v)
{
	put_head(f, name, type, help);
	fprintf(f, "%s{service=\"%s\"} %llu\n", name, w->service, (unsigned long long)v);
}

/* name{service="S",method="M" then the caller's closing. */
static void put_method_series(FILE *f, const struct warren_worker *w, const char *name,
                              const char *method)
{
	fprintf(f, "%s{service=\"%s\",method=\"", name, w->service);
	put_label(f, method);
	fputc('"', f);
}

static void put_requests(FILE *f, const struct warren_worker *w, const struct snapshot *s)
{
	put_head(f, "warren_worker_requests_total", "counter",
	         "Requests whose handler ended, by method and the status it answered.");
	for (size_t i = 0; i < w->nmethods; i++) {
		for (int st = 0; st < METRICS_NSTATUS; st++) {
			if (s->methods[i].by_status[st] == 0) {
				continue;
			}
			put_method_series(f, w, "warren_worker_requests_total", w->methods[i].name);
			fprintf(f, ",status=\"%s\"} %llu\n", warren_status_name((warren_status)st),
			        (unsigned long long)s->methods[i].by_status[st]);
		}
	}
}

static void put_durations(FILE *f, const struct warren_worker *w, const struct snapshot *s)
{
	const char *name = "warren_worker_request_duration_seconds";

	put_head(f, name, "histogram", "How long handlers ran, by method.");
	for (size_t i = 0; i < w->nmethods; i++) {
		const struct method_metrics *mm = &s->methods[i];
		uint64_t below = 0;

		for (int b = 0; b < METRICS_NBUCKETS; b++) {
			below += mm->buckets[b];
			put_method_series(f, w, "warren_worker_request_duration_seconds_bucket",
			                  w->methods[i].name);
			fprintf(f, ",le=\"%s\"} %llu\n", bucket_names[b],
			        (unsigned long long)below);
		}
		put_method_series(f, w, "warren_worker_request_duration_seconds_bucket",
		                  w->methods[i].name);
		fprintf(f, ",le=\"+Inf\"} %llu\n", (unsigned long long)mm->count);
		put_method_series(f, w, "warren_worker_request_duration_seconds_sum",
		                  w->methods[i].name);
		fprintf(f, "} %.9g\n", mm->sum);
		put_method_series(f, w, "warren_worker_request_duration_seconds_count",
		                  w->methods[i].name);
		fprintf(f, "} %llu\n", (unsigned long long)mm->count);
	}
}

static void put_dead_letters(FILE *f, const struct warren_worker *w, const struct snapshot *s)
{
	put_head(f, "warren_worker_dead_letters_total", "counter",
	         "Requests dead-lettered (confirmed), by reason.");
	for (int i = 0; i < METRICS_NREASONS; i++) {
		fprintf(f, "warren_worker_dead_letters_total{service=\"%s\",reason=\"%s\"} %llu\n",
		        w->service, reasons[i], (unsigned long long)s->dead[i]);
	}
}

static void put_stats(FILE *f, const struct warren_worker *w, const warren_worker_stats *st)
{
	put_scalar(f, w, "warren_worker_connected", "gauge",
	           "1 while connected to the broker, its queue declared.", st->connected ? 1 : 0);
	put_scalar(f, w, "warren_worker_in_flight", "gauge",
	           "Requests in a handler or waiting for one.", st->in_progress);
	put_scalar(f, w, "warren_worker_received_total", "counter",
	           "Deliveries taken from the queue.", st->received);
	put_scalar(f, w, "warren_worker_acked_total", "counter", "Requests acknowledged.",
	           st->acked);
	put_scalar(f, w, "warren_worker_expired_total", "counter",
	           "Requests dropped unexecuted: their deadline had passed.", st->expired);
	put_scalar(f, w, "warren_worker_retried_total", "counter",
	           "Transient failures sent to wait for another attempt.", st->retried);
	put_scalar(f, w, "warren_worker_dead_lettered_total", "counter",
	           "Requests dead-lettered (confirmed).", st->dead_lettered);
	put_scalar(f, w, "warren_worker_reconnects_total", "counter",
	           "Connections to the broker made after the first.", st->reconnects);
	put_scalar(f, w, "warren_worker_breaker_open", "gauge",
	           "1 while the circuit breaker has stopped consuming.", st->breaker_open ? 1 : 0);
	put_scalar(f, w, "warren_worker_unauthenticated_total", "counter",
	           "Requests refused: unsigned, badly signed, or the key not allowed.",
	           st->unauthenticated);
	put_scalar(f, w, "warren_worker_replays_total", "counter",
	           "Signed requests dropped as replays.", st->replays);
	put_scalar(f, w, "warren_worker_redelivered_total", "counter",
	           "Deliveries the broker marked redelivered.", st->redelivered);
	put_scalar(f, w, "warren_worker_blocked_seconds_total", "counter",
	           "Time the broker blocked this worker's publishes (memory or disk alarm).",
	           st->blocked_ms / 1000);
}

/* The whole exposition, malloc'd; NULL when out of memory. */
static char *render(struct warren_worker *w, size_t *len)
{
	struct snapshot s;
	char *text = NULL;
	FILE *f;

	if (!take_snapshot(w, &s)) {
		return NULL;
	}
	f = open_memstream(&text, len);
	if (f != NULL) {
		put_requests(f, w, &s);
		put_durations(f, w, &s);
		put_dead_letters(f, w, &s);
		put_stats(f, w, &s.stats);
		if (fclose(f) != 0) {
			free(text);
			text = NULL;
		}
	}
	free(s.methods);
	return text;
}

/* ------------------------------------------------------------ the server */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, char *body, size_t len,
                             enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result ret;

	if (r == NULL) {
		if (mode == MHD_RESPMEM_MUST_FREE) {
			free(body);
		}
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        code == MHD_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8"
	                                            : "text/plain; charset=utf-8");
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

/* libmicrohttpd's thread: one request. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	static char not_found[] = "not found: try /metrics\n";
	static char not_allowed[] = "only GET\n";
	char *text;
	size_t len;

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed, strlen(not_allowed),
		             MHD_RESPMEM_PERSISTENT);
	}
	if (strcmp(url, "/metrics") != 0) {
		return reply(conn, MHD_HTTP_NOT_FOUND, not_found, strlen(not_found),
		             MHD_RESPMEM_PERSISTENT);
	}
	text = render(cls, &len);
	if (text == NULL) {
		return MHD_NO;
	}
	return reply(conn, MHD_HTTP_OK, text, len, MHD_RESPMEM_MUST_FREE);
}

/* Resolves HOST:PORT (checked by the config: a ':' and a port) to the first
 * address getaddrinfo gives; the caller frees *out with freeaddrinfo. */
static warren_err resolve(const char *listen, struct addrinfo **out, char *errstr, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	char host[256];
	const char *colon = strrchr(listen, ':');
	size_t n = colon != NULL ? (size_t)(colon - listen) : 0;
	int rc;

	if (n == 0 || n >= sizeof(host)) {
		errstr_set(errstr, errlen, "metrics.listen: \"%s\" is not HOST:PORT", listen);
		return WARREN_ERR_CONFIG;
	}
	memcpy(host, listen, n);
	host[n] = '\0';
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		memmove(host, host + 1, n - 2);
		host[n - 2] = '\0';
	}
	rc = getaddrinfo(host, colon + 1, &hints, out);
	if (rc != 0) {
		errstr_set(errstr, errlen, "metrics.listen: %s: %s", host, gai_strerror(rc));
		return WARREN_ERR_CONFIG;
	}
	return WARREN_OK;
}

warren_err metrics_start(struct warren_worker *w, const char *listen, void **out, char *errstr,
                         size_t errlen)
{
	struct addrinfo *ai;
	struct MHD_Daemon *d;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
	warren_err err;

	*out = NULL;
	err = resolve(listen, &ai, errstr, errlen);
	if (err != WARREN_OK) {
		return err;
	}
	if (ai->ai_family == AF_INET6) {
		flags |= MHD_USE_IPv6;
	}
	errno = 0;
	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, w, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
	                     MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
	                     MHD_OPTION_END);
	freeaddrinfo(ai);
	if (d == NULL) {
		errstr_set(errstr, errlen, "metrics.listen: cannot listen on %s: %s", listen,
		           errno != 0 ? strerror(errno) : "libmicrohttpd failed to start");
		return WARREN_ERR_SYSTEM;
	}
	*out = d;
	return WARREN_OK;
}

void metrics_stop(void *server)
{
	if (server != NULL) {
		MHD_stop_daemon(server);
	}
}
