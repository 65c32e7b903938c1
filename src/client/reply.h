/* reply.h: building the warren_reply a caller receives from a reply message. */
#ifndef WARREN_REPLY_H
#define WARREN_REPLY_H

#include "envelope.h"

struct warren_reply {
	warren_status status;
	warren_value *body;     /* the whole decoded body */
	const warren_value *result; /* OK: body; otherwise its "details" (or NULL) */
	const char *message;    /* points into body, or "" */
	char correlation_id[65];
};

/* Decodes a reply message (properties already read into m). NULL with errstr
 * on an undecodable body or when out of memory. */
warren_reply *reply_from_message(const struct envelope_meta *m, const void *body, size_t len,
                                 size_t max_size, char *errstr, size_t errlen);

#endif
