/* client_metrics.c: the caller's side of the Prometheus metrics. Methods are
 * found by name in a glibc hash table (hsearch_r) sized once for
 * CLIENT_METRICS_MAX_METHODS, so a lookup is O(1) and a call allocates only
 * on its method's first sighting; the call keeps the slot, so its end is
 * recorded without a lookup. */
#include "client_metrics.h"

#include <stdlib.h>
#include <string.h>

/* One method's counts as a scrape copies them, with its (stable) name. */
struct method_copy {
	const char *name;
	uint64_t by_status[PROM_NSTATUS];
	struct prom_hist duration;
};

void client_metrics_init(struct client_metrics *m)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->mu, NULL);
}

warren_err client_metrics_start(struct client_metrics *m, const char *listen,
                                metrics_render_fn render, void *arg, char *errstr, size_t errlen)
{
	if (listen == NULL || listen[0] == '\0') {
		return WARREN_OK;
	}
	/* Twice the entries it will hold keeps the open-addressed table fast. */
	m->methods = calloc(CLIENT_METRICS_MAX_METHODS + 1, sizeof(*m->methods));
	if (m->methods == NULL || hcreate_r(2 * CLIENT_METRICS_MAX_METHODS, &m->index) == 0) {
		free(m->methods);
		m->methods = NULL;
		snprintf(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	m->on = true;
	return metrics_http_start("client.metrics_listen", listen, render, arg, &m->server, errstr,
	                          errlen);
}

void client_metrics_stop(struct client_metrics *m)
{
	metrics_http_stop(m->server);
	m->server = NULL;
}

void client_metrics_free(struct client_metrics *m)
{
	client_metrics_stop(m); /* it reads the rest: first */
	if (m->on) {
		hdestroy_r(&m->index);
	}
	for (size_t i = 0; i < m->n; i++) {
		free(m->methods[i]);
	}
	free(m->methods);
	pthread_mutex_destroy(&m->mu);
}

static struct client_method *method_new(const char *name)
{
	size_t len = strlen(name);
	struct client_method *cm = calloc(1, sizeof(*cm) + len + 1);

	if (cm != NULL) {
		memcpy(cm->name, name, len + 1);
	}
	return cm;
}

/* Under mu: the slot of a method not seen before. */
static struct client_method *add_method(struct client_metrics *m, const char *method)
{
	bool full = m->n >= CLIENT_METRICS_MAX_METHODS;
	ENTRY e = {.key = (char *)(full ? CLIENT_METRICS_OTHER : method)}, *found = NULL;
	struct client_method *cm;

	if (full && hsearch_r(e, FIND, &found, &m->index) != 0) {
		return found->data;
	}
	cm = method_new(e.key);
	if (cm == NULL) {
		return NULL;
	}
	e.key = cm->name;
	e.data = cm;
	if (hsearch_r(e, ENTER, &found, &m->index) == 0) {
		free(cm);
		return NULL;
	}
	m->methods[m->n++] = cm;
	return cm;
}

struct client_method *client_metrics_method(struct client_metrics *m, const char *method)
{
	ENTRY e = {.key = (char *)method}, *found = NULL;
	struct client_method *cm;

	if (!m->on) {
		return NULL;
	}
	pthread_mutex_lock(&m->mu);
	if (hsearch_r(e, FIND, &found, &m->index) != 0) {
		cm = found->data;
	} else {
		cm = add_method(m, method);
	}
	pthread_mutex_unlock(&m->mu);
	return cm;
}

void client_metrics_record(struct client_metrics *m, struct client_method *cm, int status,
                           double seconds)
{
	pthread_mutex_lock(&m->mu);
	if (status >= 0 && status < PROM_NSTATUS) {
		cm->by_status[status]++;
	}
	prom_hist_observe(&cm->duration, seconds);
	pthread_mutex_unlock(&m->mu);
}

/* ------------------------------------------------------------ rendering */

/* The methods' counts, copied under mu; NULL when out of memory. */
static struct method_copy *copy_methods(struct client_metrics *m, size_t *n)
{
	struct method_copy *c;

	pthread_mutex_lock(&m->mu);
	*n = m->n;
	c = calloc(*n > 0 ? *n : 1, sizeof(*c));
	for (size_t i = 0; c != NULL && i < *n; i++) {
		c[i].name = m->methods[i]->name;
		memcpy(c[i].by_status, m->methods[i]->by_status, sizeof(c[i].by_status));
		c[i].duration = m->methods[i]->duration;
	}
	pthread_mutex_unlock(&m->mu);
	return c;
}

static void put_calls(FILE *f, const char *app, const struct method_copy *c, size_t n)
{
	prom_put_head(f, "warren_client_calls_total", "counter",
	              "Calls ended, by method and status: the reply's, or for a call ended "
	              "without one the status its caller saw (DEADLINE_EXCEEDED, UNAVAILABLE...).");
	for (size_t i = 0; i < n; i++) {
		const struct prom_label l[] = {{"app", app}, {"method", c[i].name}};

		prom_put_by_status(f, "warren_client_calls_total", l, 2, c[i].by_status);
	}
	prom_put_head(f, "warren_client_call_duration_seconds", "histogram",
	              "How long calls took, from the call to its end, by method.");
	for (size_t i = 0; i < n; i++) {
		const struct prom_label l[] = {{"app", app}, {"method", c[i].name}};

		prom_put_histogram(f, "warren_client_call_duration_seconds", l, 2, &c[i].duration);
	}
}

static void put_stats(FILE *f, const char *app, const warren_client_stats *st)
{
	const struct prom_label l[] = {{"app", app}};
	const struct {
		const char *name, *type, *help;
		uint64_t v;
	} rows[] = {
	    {"warren_client_connected", "gauge",
	     "1 while connected to the broker, the reply path set up.", st->connected ? 1 : 0},
	    {"warren_client_in_flight", "gauge", "Calls not yet ended.", st->in_flight},
	    {"warren_client_late_replies_total", "counter",
	     "Replies dropped: their call had already ended (at its deadline, mostly).",
	     st->late_replies},
	    {"warren_client_unknown_replies_total", "counter",
	     "Replies dropped: malformed, or a correlation id that was never this client's.",
	     st->unknown_replies},
	    {"warren_client_untrusted_replies_total", "counter",
	     "Replies ignored as not from the service: a signature that does not verify or a "
	     "sealed body that does not open (the call keeps waiting).",
	     st->untrusted_replies},
	    {"warren_client_republished_total", "counter",
	     "Requests published again: no route, a nack, or the connection lost before the "
	     "confirm.",
	     st->republished},
	    {"warren_client_resent_total", "counter",
	     "Requests sent again because the connection was lost after the broker confirmed "
	     "them (client.resend).",
	     st->resent},
	    {"warren_client_fast_sent_total", "counter",
	     "Requests published on the fast lane (rpc.fast); the others took the durable lane.",
	     st->fast_sent},
	    {"warren_client_fast_fallbacks_total", "counter",
	     "Transient requests the fast lane returned (no queue bound for their service), "
	     "sent again on the durable lane.",
	     st->fast_fallbacks},
	    {"warren_client_reconnects_total", "counter",
	     "Connections to the broker made after the first.", st->reconnects},
	    {"warren_client_blocked_seconds_total", "counter",
	     "Time the broker blocked this client's publishes (memory or disk alarm).",
	     st->blocked_ms / 1000},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		prom_put_metric(f, rows[i].name, rows[i].type, rows[i].help, l, 1, rows[i].v);
	}
}

bool client_metrics_render(FILE *f, struct client_metrics *m, const char *app,
                           const warren_client_stats *st)
{
	size_t n;
	struct method_copy *c = copy_methods(m, &n);

	if (c == NULL) {
		return false;
	}
	put_calls(f, app, c, n);
	put_stats(f, app, st);
	free(c);
	return true;
}
