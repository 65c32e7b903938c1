/* envelope.h: requests and replies of the wire contract (DESIGN.md section
 * 2): AMQP properties and headers of requests and replies to and from a
 * plain struct, and bodies to and from warren_value in the message's content
 * type. The broker's names and declarations, and the header lookup, are
 * wire.h's. */
#ifndef WARREN_ENVELOPE_H
#define WARREN_ENVELOPE_H

#include <amqp.h>
#include <amqp_framing.h>

#include "warren.h"
#include "wire.h"

#define ENVELOPE_MSGPACK "application/msgpack"
#define ENVELOPE_JSON "application/json"

enum envelope_format { ENVELOPE_FMT_MSGPACK, ENVELOPE_FMT_JSON };

/* What a request or reply carries besides its body. Fixed buffers: AMQP short
 * strings are at most 255 bytes, and ids are capped lower. Empty string = absent. */
struct envelope_meta {
	char method[256];         /* type (requests) */
	char correlation_id[65];
	char message_id[65];
	char reply_to[256];
	char app_id[128];
	char traceparent[64];
	enum envelope_format format;
	int64_t deadline_ms;      /* rpc-deadline, Unix ms; 0 = none */
	int attempt;              /* rpc-attempt; 1 when absent */
	int delivery_count;       /* x-delivery-count: earlier deliveries (quorum queues) */
	int status;               /* rpc-status (replies); -1 when absent */
	bool persistent;          /* delivery_mode 2 */
	bool sealed;              /* content_encoding x-warren-sealed (seal.h) */
	char sealed_to[65];       /* rpc-sealed-to: the service key a body is sealed to (ed25519) */
	int accept_batch;         /* rpc-accept-batch: the highest batch format version the
	                           * caller reads in replies (batch.h); 0 = none */
};

/* Room for the properties of one outgoing message; points into meta, so
 * meta must outlive the publish. */
struct envelope_props {
	amqp_basic_properties_t props;
	amqp_table_entry_t headers[10];
};

/* The content type of a format, as sent. */
const char *envelope_content_type(enum envelope_format fmt);
/* Adds rpc-key-id, rpc-signed-at and rpc-signature to props; they point
 * into key_id and sig, which must outlive the publish. */
void envelope_add_signature(struct envelope_props *ep, const char *key_id, int64_t signed_at_ms,
                            const unsigned char *sig, size_t len);

/* Fills out from a request's meta (type, ids, reply_to, app_id, timestamp,
 * delivery_mode, content_type, content_encoding, rpc-deadline, rpc-attempt,
 * traceparent, rpc-sealed-to, rpc-accept-batch). */
void envelope_request_props(const struct envelope_meta *m, struct envelope_props *out);
/* Fills out from a reply's meta (correlation_id, content_type,
 * content_encoding, rpc-status). */
void envelope_reply_props(const struct envelope_meta *m, struct envelope_props *out);

/* Reads properties into m, validating kinds and lengths. WARREN_ERR_DECODE
 * with errstr ("header rpc-deadline: expected an integer, got a string") on
 * anything malformed; m is then partly filled (ids are filled first, so an
 * error reply can still be correlated). */
warren_err envelope_read(const amqp_basic_properties_t *p, struct envelope_meta *m, char *errstr,
                         size_t errlen);

/* Body in the given format -> value. Refuses bodies above max_size before
 * decoding. An empty body decodes as nil. */
warren_err envelope_decode_body(enum envelope_format fmt, const void *body, size_t len,
                                size_t max_size, warren_value **out, char *errstr, size_t errlen);
/* The same, with msgpack binary values pointing into body rather than
 * copied (codec_msgpack_decode_in_place): body must outlive *out. */
warren_err envelope_decode_body_in_place(enum envelope_format fmt, const void *body, size_t len,
                                         size_t max_size, warren_value **out, char *errstr,
                                         size_t errlen);
/* value (NULL: nil) -> body in the given format; *out malloc'd. */
warren_err envelope_encode_body(enum envelope_format fmt, const warren_value *v, void **out,
                                size_t *outlen, char *errstr, size_t errlen);
/* The same, a msgpack body in a buffer from alloc (codec_msgpack_encode_alloc). */
warren_err envelope_encode_body_alloc(enum envelope_format fmt, const warren_value *v,
                                      void *(*alloc)(size_t n, void *arg), void *arg, void **out,
                                      size_t *outlen, char *errstr, size_t errlen);

/* The body of an error reply: {"code": NAME, "message": msg, "details": d}
 * (details taken; omitted when NULL). NULL when out of memory. */
warren_value *envelope_error_value(int status, const char *message, warren_value *details);
/* Reads an error body; *message points into v ("" when absent or not a
 * string), *details into v or NULL. */
void envelope_error_parse(const warren_value *v, const char **message,
                          const warren_value **details);

/* An AMQP integer field of any width (signed or unsigned, 8 to 64 bits) as
 * int64: true with *out set; false, *out untouched, for any other kind (a
 * timestamp included) and for a uint64 above INT64_MAX. */
bool envelope_field_int(const amqp_field_value_t *v, int64_t *out);

/* Earlier deliveries of a message: the broker's x-delivery-count (quorum
 * queues) plus the deliveries of the batch it was republished from
 * (rpc-crashes, batch.h). Integers of any width or timestamps; an odd,
 * negative or absent value counts 0: the broker's count is never the
 * caller's error. */
int envelope_delivery_count(const amqp_basic_properties_t *p);

/* Copies at most cap-1 bytes and a NUL; returns false if src was longer. */
bool envelope_copy(char *dst, size_t cap, amqp_bytes_t src);

#endif
