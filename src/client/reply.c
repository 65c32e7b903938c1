/* reply.c: a reply message as the caller sees it: status, result or error
 * message and details (DESIGN.md section 2). */
#include "reply.h"

#include <stdio.h>
#include <stdlib.h>

warren_reply *reply_from_message(const struct envelope_meta *m, const void *body, size_t len,
                                 size_t max_size, char *errstr, size_t errlen)
{
	warren_reply *r = calloc(1, sizeof(*r));

	if (r == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	if (m->status < 0) {
		snprintf(errstr, errlen, "reply has no rpc-status header");
		free(r);
		return NULL;
	}
	if (envelope_decode_body(m->format, body, len, max_size, &r->body, errstr, errlen) !=
	    WARREN_OK) {
		free(r);
		return NULL;
	}
	r->status = (warren_status)m->status;
	snprintf(r->correlation_id, sizeof(r->correlation_id), "%s", m->correlation_id);
	if (r->status == WARREN_STATUS_OK) {
		r->result = r->body;
		r->message = "";
	} else {
		envelope_error_parse(r->body, &r->message, &r->result);
	}
	return r;
}

warren_status warren_reply_status(const warren_reply *r)
{
	return r != NULL ? r->status : WARREN_STATUS_UNKNOWN;
}

const warren_value *warren_reply_result(const warren_reply *r)
{
	return r != NULL ? r->result : NULL;
}

const char *warren_reply_message(const warren_reply *r)
{
	return r != NULL ? r->message : "";
}

const char *warren_reply_correlation_id(const warren_reply *r)
{
	return r != NULL ? r->correlation_id : "";
}

void warren_reply_free(warren_reply *r)
{
	if (r == NULL) {
		return;
	}
	warren_value_free(r->body);
	free(r);
}
