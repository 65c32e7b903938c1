/* metrics_http.c: GET /metrics over libmicrohttpd, from its own thread. Each
 * scrape renders into an open_memstream buffer that the response then owns;
 * nothing here knows what the metrics are. */
#include "metrics_http.h"

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "errstr.h"

struct metrics_http {
	struct MHD_Daemon *daemon;
	metrics_render_fn render;
	void *arg;
};

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

/* The whole exposition, malloc'd; NULL when out of memory. */
static char *render(const struct metrics_http *s, size_t *len)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len);
	bool ok;

	if (f == NULL) {
		return NULL;
	}
	ok = s->render(f, s->arg);
	if (fclose(f) != 0 || !ok) {
		free(text);
		return NULL;
	}
	return text;
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

/* Resolves HOST:PORT to the first address getaddrinfo gives; the caller
 * frees *out with freeaddrinfo. */
static warren_err resolve(const char *key, const char *listen, struct addrinfo **out, char *errstr,
                          size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	char host[256];
	const char *colon = strrchr(listen, ':');
	size_t n = colon != NULL ? (size_t)(colon - listen) : 0;
	int rc;

	if (n == 0 || n >= sizeof(host)) {
		errstr_set(errstr, errlen, "%s: \"%s\" is not HOST:PORT", key, listen);
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
		errstr_set(errstr, errlen, "%s: %s: %s", key, host, gai_strerror(rc));
		return WARREN_ERR_CONFIG;
	}
	return WARREN_OK;
}

warren_err metrics_http_start(const char *key, const char *listen, metrics_render_fn render_fn,
                              void *arg, struct metrics_http **out, char *errstr, size_t errlen)
{
	struct metrics_http *s;
	struct addrinfo *ai;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
	warren_err err;

	*out = NULL;
	err = resolve(key, listen, &ai, errstr, errlen);
	if (err != WARREN_OK) {
		return err;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		freeaddrinfo(ai);
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	s->render = render_fn;
	s->arg = arg;
	if (ai->ai_family == AF_INET6) {
		flags |= MHD_USE_IPv6;
	}
	errno = 0;
	s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
	                             ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, 16u,
	                             MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	freeaddrinfo(ai);
	if (s->daemon == NULL) {
		errstr_set(errstr, errlen, "%s: cannot listen on %s: %s", key, listen,
		           errno != 0 ? strerror(errno) : "libmicrohttpd failed to start");
		free(s);
		return WARREN_ERR_SYSTEM;
	}
	*out = s;
	return WARREN_OK;
}

void metrics_http_stop(struct metrics_http *s)
{
	if (s != NULL) {
		MHD_stop_daemon(s->daemon);
		free(s);
	}
}
