/* trace.h: W3C Trace Context (traceparent) for calls: a call joins the
 * trace of the request a handler is serving, or starts a new one, and gets
 * a span id of its own. */
#ifndef WARREN_TRACE_H
#define WARREN_TRACE_H

#include <stdbool.h>

/* "00-" 32 hex "-" 16 hex "-" 2 hex, and a NUL. */
#define TRACEPARENT_LEN 56

/* Whether s is a traceparent of version 00 with non-zero ids. */
bool trace_valid(const char *s);
/* A traceparent for a new call: parent's trace id and flags when parent
 * is valid, a fresh trace id (sampled) otherwise; always a fresh span id. */
void trace_child(const char *parent, char out[TRACEPARENT_LEN]);

#endif
