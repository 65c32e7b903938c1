/* metrics_http.h: the HTTP server (libmicrohttpd) that shows a process's
 * Prometheus metrics at /metrics, for a worker (metrics.listen) and for a
 * caller (client.metrics_listen) alike. What it shows comes from a render
 * callback; any other path is answered 404. */
#ifndef WARREN_METRICS_HTTP_H
#define WARREN_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "warren.h"

/* Writes the whole exposition to f; false when out of memory (the scrape
 * then gets no answer). Runs on the server's thread, one scrape at a time
 * per connection: it must take its own locks. */
typedef bool (*metrics_render_fn)(FILE *f, void *arg);

struct metrics_http;

/* Starts serving on listen ("HOST:PORT", checked by the config: a ':' and
 * a port); key names the configuration key in messages. WARREN_ERR_CONFIG
 * when the host does not resolve, WARREN_ERR_SYSTEM when the address cannot
 * be bound; *out stays NULL then. Any thread; the server runs its own. */
warren_err metrics_http_start(const char *key, const char *listen, metrics_render_fn render,
                              void *arg, struct metrics_http **out, char *errstr, size_t errlen);
/* Stops the server (NULL-safe); no scrape is being answered on return. */
void metrics_http_stop(struct metrics_http *s);

#endif
