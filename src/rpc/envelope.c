/* envelope.c: requests and replies on the wire (DESIGN.md section 2): AMQP
 * properties and headers to and from struct envelope_meta, bodies to and
 * from warren_value, and the shape of an error reply's body. */
#include "envelope.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "codec.h"
#include "seal.h"

bool envelope_copy(char *dst, size_t cap, amqp_bytes_t src)
{
	size_t n = src.len < cap - 1 ? src.len : cap - 1;

	if (n > 0) {
		memcpy(dst, src.bytes, n);
	}
	dst[n] = '\0';
	return src.len < cap;
}

static amqp_bytes_t bytes_of(const char *s)
{
	return amqp_cstring_bytes(s);
}

static void header_int(amqp_table_entry_t *e, const char *key, int64_t v)
{
	e->key = amqp_cstring_bytes(key);
	e->value.kind = AMQP_FIELD_KIND_I64;
	e->value.value.i64 = v;
}

static void header_str(amqp_table_entry_t *e, const char *key, const char *v)
{
	e->key = amqp_cstring_bytes(key);
	e->value.kind = AMQP_FIELD_KIND_UTF8;
	e->value.value.bytes = amqp_cstring_bytes(v);
}

static const char *content_type_of(enum envelope_format fmt)
{
	return fmt == ENVELOPE_FMT_JSON ? ENVELOPE_JSON : ENVELOPE_MSGPACK;
}

const char *envelope_content_type(enum envelope_format fmt)
{
	return content_type_of(fmt);
}

void envelope_add_signature(struct envelope_props *ep, const char *key_id, int64_t signed_at_ms,
                            const unsigned char *sig, size_t len)
{
	amqp_table_t *h = &ep->props.headers;
	int n = h->num_entries;

	ep->props._flags |= AMQP_BASIC_HEADERS_FLAG;
	h->entries = ep->headers;
	header_str(&ep->headers[n++], "rpc-key-id", key_id);
	header_int(&ep->headers[n++], "rpc-signed-at", signed_at_ms);
	ep->headers[n].key = amqp_cstring_bytes("rpc-signature");
	ep->headers[n].value.kind = AMQP_FIELD_KIND_BYTES;
	ep->headers[n].value.value.bytes = (amqp_bytes_t){.len = len, .bytes = (void *)sig};
	n++;
	h->num_entries = n;
}

static void set_encoding(const struct envelope_meta *m, amqp_basic_properties_t *p)
{
	if (m->sealed) {
		p->_flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
		p->content_encoding = amqp_cstring_bytes(SEAL_ENCODING);
	}
}

void envelope_request_props(const struct envelope_meta *m, struct envelope_props *out)
{
	amqp_basic_properties_t *p = &out->props;
	int n = 0;

	memset(out, 0, sizeof(*out));
	p->_flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
	            AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
	            AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_HEADERS_FLAG;
	p->content_type = bytes_of(content_type_of(m->format));
	p->delivery_mode = m->persistent ? 2 : 1;
	p->correlation_id = bytes_of(m->correlation_id);
	p->message_id = bytes_of(m->message_id);
	p->type = bytes_of(m->method);
	p->timestamp = (uint64_t)time(NULL);
	set_encoding(m, p);
	if (m->reply_to[0] != '\0') {
		p->_flags |= AMQP_BASIC_REPLY_TO_FLAG;
		p->reply_to = bytes_of(m->reply_to);
	}
	if (m->app_id[0] != '\0') {
		p->_flags |= AMQP_BASIC_APP_ID_FLAG;
		p->app_id = bytes_of(m->app_id);
	}
	if (m->deadline_ms > 0) {
		header_int(&out->headers[n++], "rpc-deadline", m->deadline_ms);
	}
	header_int(&out->headers[n++], "rpc-attempt", m->attempt > 0 ? m->attempt : 1);
	if (m->traceparent[0] != '\0') {
		header_str(&out->headers[n++], "traceparent", m->traceparent);
	}
	if (m->sealed_to[0] != '\0') {
		header_str(&out->headers[n++], "rpc-sealed-to", m->sealed_to);
	}
	if (m->accept_batch > 0) {
		header_int(&out->headers[n++], BATCH_ACCEPT_HEADER, m->accept_batch);
	}
	p->headers.num_entries = n;
	p->headers.entries = out->headers;
}

void envelope_reply_props(const struct envelope_meta *m, struct envelope_props *out)
{
	amqp_basic_properties_t *p = &out->props;

	memset(out, 0, sizeof(*out));
	p->_flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
	            AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
	p->content_type = bytes_of(content_type_of(m->format));
	p->correlation_id = bytes_of(m->correlation_id);
	/* A reply is worth nothing once its caller is gone: no need to persist it. */
	p->delivery_mode = 1;
	set_encoding(m, p);
	header_int(&out->headers[0], "rpc-status", m->status);
	p->headers.num_entries = 1;
	p->headers.entries = out->headers;
}

static const char *kind_name(uint8_t kind)
{
	switch (kind) {
	case AMQP_FIELD_KIND_UTF8:
		return "a string";
	case AMQP_FIELD_KIND_BYTES:
		return "bytes";
	case AMQP_FIELD_KIND_TABLE:
		return "a table";
	case AMQP_FIELD_KIND_ARRAY:
		return "an array";
	case AMQP_FIELD_KIND_BOOLEAN:
		return "a boolean";
	case AMQP_FIELD_KIND_F32:
	case AMQP_FIELD_KIND_F64:
	case AMQP_FIELD_KIND_DECIMAL:
		return "a non-integer number";
	default:
		return "another type";
	}
}

bool envelope_field_int(const amqp_field_value_t *v, int64_t *out)
{
	switch (v->kind) {
	case AMQP_FIELD_KIND_I8:
		*out = v->value.i8;
		return true;
	case AMQP_FIELD_KIND_U8:
		*out = v->value.u8;
		return true;
	case AMQP_FIELD_KIND_I16:
		*out = v->value.i16;
		return true;
	case AMQP_FIELD_KIND_U16:
		*out = v->value.u16;
		return true;
	case AMQP_FIELD_KIND_I32:
		*out = v->value.i32;
		return true;
	case AMQP_FIELD_KIND_U32:
		*out = v->value.u32;
		return true;
	case AMQP_FIELD_KIND_I64:
		*out = v->value.i64;
		return true;
	case AMQP_FIELD_KIND_U64:
		if (v->value.u64 > INT64_MAX) {
			return false;
		}
		*out = (int64_t)v->value.u64;
		return true;
	default:
		return false;
	}
}

/* An integer, or a timestamp read as one (a uint64): the request headers
 * of warren(7) have always taken both. */
static bool int_or_stamp(const amqp_field_value_t *v, int64_t *out)
{
	if (v->kind == AMQP_FIELD_KIND_TIMESTAMP) {
		amqp_field_value_t u = {.kind = AMQP_FIELD_KIND_U64, .value.u64 = v->value.u64};

		return envelope_field_int(&u, out);
	}
	return envelope_field_int(v, out);
}

/* Header key as a count: 0 when absent, odd or outside 0..INT32_MAX. */
static int count_header(const amqp_basic_properties_t *p, const char *key)
{
	const amqp_field_value_t *v = wire_header(p, key);
	int64_t n;

	if (v == NULL || !int_or_stamp(v, &n) || n < 0 || n > INT32_MAX) {
		return 0;
	}
	return (int)n;
}

int envelope_delivery_count(const amqp_basic_properties_t *p)
{
	int n = count_header(p, WIRE_H_DELIVERY_COUNT);
	int carried = count_header(p, BATCH_CRASHES_HEADER);

	return carried <= INT32_MAX - n ? n + carried : n;
}

/* WARREN_OK with *out set, or left alone when absent; DECODE when ill-typed
 * or outside min..max. */
static warren_err read_int_header(const amqp_basic_properties_t *p, const char *key, int64_t min,
                                  int64_t max, int64_t *out, char *errstr, size_t errlen)
{
	const amqp_field_value_t *v = wire_header(p, key);
	int64_t n;

	if (v == NULL) {
		return WARREN_OK;
	}
	if (!int_or_stamp(v, &n)) {
		snprintf(errstr, errlen, "header %s: expected an integer, got %s", key,
		         kind_name(v->kind));
		return WARREN_ERR_DECODE;
	}
	if (n < min || n > max) {
		snprintf(errstr, errlen, "header %s: %lld is out of range %lld..%lld", key,
		         (long long)n, (long long)min, (long long)max);
		return WARREN_ERR_DECODE;
	}
	*out = n;
	return WARREN_OK;
}

static warren_err read_str_header(const amqp_basic_properties_t *p, const char *key, char *dst,
                                  size_t cap, char *errstr, size_t errlen)
{
	const amqp_field_value_t *v = wire_header(p, key);

	if (v == NULL) {
		return WARREN_OK;
	}
	if (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES) {
		snprintf(errstr, errlen, "header %s: expected a string, got %s", key,
		         kind_name(v->kind));
		return WARREN_ERR_DECODE;
	}
	if (!envelope_copy(dst, cap, v->value.bytes)) {
		snprintf(errstr, errlen, "header %s: longer than %zu bytes", key, cap - 1);
		return WARREN_ERR_DECODE;
	}
	return WARREN_OK;
}

static warren_err read_prop(const amqp_basic_properties_t *p, amqp_flags_t flag, amqp_bytes_t b,
                            const char *name, char *dst, size_t cap, char *errstr, size_t errlen)
{
	dst[0] = '\0';
	if (!(p->_flags & flag)) {
		return WARREN_OK;
	}
	if (!envelope_copy(dst, cap, b)) {
		snprintf(errstr, errlen, "property %s: longer than %zu bytes", name, cap - 1);
		return WARREN_ERR_DECODE;
	}
	return WARREN_OK;
}

static warren_err read_format(const amqp_basic_properties_t *p, enum envelope_format *fmt,
                              char *errstr, size_t errlen)
{
	char ct[64];

	*fmt = ENVELOPE_FMT_MSGPACK;
	if (!(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) || p->content_type.len == 0) {
		return WARREN_OK;
	}
	envelope_copy(ct, sizeof(ct), p->content_type);
	/* Media types are case-insensitive and may carry parameters
	 * ("application/json; charset=utf-8"). */
	ct[strcspn(ct, "; \t")] = '\0';
	for (char *c = ct; *c != '\0'; c++) {
		*c = (char)tolower((unsigned char)*c);
	}
	if (strcmp(ct, ENVELOPE_JSON) == 0) {
		*fmt = ENVELOPE_FMT_JSON;
		return WARREN_OK;
	}
	if (strcmp(ct, ENVELOPE_MSGPACK) == 0) {
		return WARREN_OK;
	}
	snprintf(errstr, errlen, "unsupported content type \"%s\" (expected %s or %s)", ct,
	         ENVELOPE_MSGPACK, ENVELOPE_JSON);
	return WARREN_ERR_DECODE;
}

/* No content_encoding, or a sealed body (seal.h); nothing else. */
static warren_err read_encoding(const amqp_basic_properties_t *p, bool *sealed, char *errstr,
                                size_t errlen)
{
	char enc[64];

	*sealed = false;
	if (!(p->_flags & AMQP_BASIC_CONTENT_ENCODING_FLAG) || p->content_encoding.len == 0) {
		return WARREN_OK;
	}
	envelope_copy(enc, sizeof(enc), p->content_encoding);
	if (strcmp(enc, SEAL_ENCODING) == 0) {
		*sealed = true;
		return WARREN_OK;
	}
	snprintf(errstr, errlen, "unsupported content encoding \"%s\" (expected none or %s)", enc,
	         SEAL_ENCODING);
	return WARREN_ERR_DECODE;
}

static warren_err read_props(const amqp_basic_properties_t *p, struct envelope_meta *m,
                             char *errstr, size_t errlen)
{
	warren_err err =
	    read_prop(p, AMQP_BASIC_CORRELATION_ID_FLAG, p->correlation_id, "correlation_id",
	              m->correlation_id, sizeof(m->correlation_id), errstr, errlen);

	if (err == WARREN_OK) {
		err = read_prop(p, AMQP_BASIC_REPLY_TO_FLAG, p->reply_to, "reply_to", m->reply_to,
		                sizeof(m->reply_to), errstr, errlen);
	}
	if (err == WARREN_OK) {
		err = read_prop(p, AMQP_BASIC_MESSAGE_ID_FLAG, p->message_id, "message_id",
		                m->message_id, sizeof(m->message_id), errstr, errlen);
	}
	if (err == WARREN_OK) {
		err = read_prop(p, AMQP_BASIC_TYPE_FLAG, p->type, "type", m->method,
		                sizeof(m->method), errstr, errlen);
	}
	if (err == WARREN_OK) {
		err = read_prop(p, AMQP_BASIC_APP_ID_FLAG, p->app_id, "app_id", m->app_id,
		                sizeof(m->app_id), errstr, errlen);
	}
	return err;
}

static warren_err read_headers(const amqp_basic_properties_t *p, struct envelope_meta *m,
                               char *errstr, size_t errlen)
{
	int64_t attempt = 1, status = -1;
	warren_err err;

	err = read_int_header(p, "rpc-deadline", 0, INT64_MAX, &m->deadline_ms, errstr, errlen);
	if (err == WARREN_OK) {
		err = read_int_header(p, "rpc-attempt", 1, 1000000, &attempt, errstr, errlen);
	}
	if (err == WARREN_OK) {
		err = read_int_header(p, "rpc-status", 0, 16, &status, errstr, errlen);
	}
	if (err == WARREN_OK) {
		err = read_str_header(p, "traceparent", m->traceparent, sizeof(m->traceparent),
		                      errstr, errlen);
	}
	if (err == WARREN_OK) {
		err = read_str_header(p, "rpc-sealed-to", m->sealed_to, sizeof(m->sealed_to),
		                      errstr, errlen);
	}
	m->attempt = (int)attempt;
	m->status = (int)status;
	m->delivery_count = envelope_delivery_count(p);
	/* An offer, not an instruction: one this end cannot read is as none
	 * (single replies), never the caller's error. */
	const amqp_field_value_t *ab = wire_header(p, BATCH_ACCEPT_HEADER);
	int64_t accept = 0;
	if (ab != NULL && int_or_stamp(ab, &accept) && accept > 0 && accept <= INT32_MAX) {
		m->accept_batch = (int)accept;
	}
	return err;
}

warren_err envelope_read(const amqp_basic_properties_t *p, struct envelope_meta *m, char *errstr,
                         size_t errlen)
{
	warren_err err;

	memset(m, 0, sizeof(*m));
	m->attempt = 1;
	m->status = -1;
	m->persistent = (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) && p->delivery_mode == 2;
	char fmt_why[200] = "";
	warren_err fmt_err;

	/* The ids first, so that even a bad request can be answered; the
	 * format before the headers, so that the answer is in the caller's. */
	err = read_props(p, m, errstr, errlen);
	fmt_err = read_format(p, &m->format, fmt_why, sizeof(fmt_why));
	if (fmt_err == WARREN_OK) {
		fmt_err = read_encoding(p, &m->sealed, fmt_why, sizeof(fmt_why));
	}
	if (err == WARREN_OK) {
		err = read_headers(p, m, errstr, errlen);
	}
	if (err == WARREN_OK && fmt_err != WARREN_OK) {
		snprintf(errstr, errlen, "%s", fmt_why);
		err = fmt_err;
	}
	return err;
}

static warren_err decode_body(enum envelope_format fmt, const void *body, size_t len,
                              size_t max_size, bool in_place, warren_value **out, char *errstr,
                              size_t errlen)
{
	char why[200] = "";
	warren_err err;

	*out = NULL;
	if (len > max_size) {
		snprintf(errstr, errlen, "body of %zu bytes is larger than message.max_size (%zu)",
		         len, max_size);
		return WARREN_ERR_DECODE;
	}
	if (len == 0) {
		*out = warren_nil();
		return *out != NULL ? WARREN_OK : WARREN_ERR_NOMEM;
	}
	if (fmt == ENVELOPE_FMT_JSON) {
		err = warren_value_from_json(body, len, out, why, sizeof(why));
	} else {
		err = in_place ? codec_msgpack_decode_in_place(body, len, out, why, sizeof(why))
		               : codec_msgpack_decode(body, len, out, why, sizeof(why));
	}
	if (err != WARREN_OK && err != WARREN_ERR_NOMEM) {
		snprintf(errstr, errlen, "undecodable %s body: %s",
		         fmt == ENVELOPE_FMT_JSON ? "JSON" : "msgpack", why);
		return WARREN_ERR_DECODE;
	}
	return err;
}

warren_err envelope_decode_body(enum envelope_format fmt, const void *body, size_t len,
                                size_t max_size, warren_value **out, char *errstr, size_t errlen)
{
	return decode_body(fmt, body, len, max_size, false, out, errstr, errlen);
}

warren_err envelope_decode_body_in_place(enum envelope_format fmt, const void *body, size_t len,
                                         size_t max_size, warren_value **out, char *errstr,
                                         size_t errlen)
{
	return decode_body(fmt, body, len, max_size, true, out, errstr, errlen);
}

warren_err envelope_encode_body(enum envelope_format fmt, const warren_value *v, void **out,
                                size_t *outlen, char *errstr, size_t errlen)
{
	return envelope_encode_body_alloc(fmt, v, NULL, NULL, out, outlen, errstr, errlen);
}

warren_err envelope_encode_body_alloc(enum envelope_format fmt, const warren_value *v,
                                      void *(*alloc)(size_t n, void *arg), void *arg, void **out,
                                      size_t *outlen, char *errstr, size_t errlen)
{
	warren_value *nil = NULL;
	warren_err err;
	char *text = NULL;

	if (v == NULL) {
		nil = warren_nil();
		if (nil == NULL) {
			return WARREN_ERR_NOMEM;
		}
		v = nil;
	}
	if (fmt == ENVELOPE_FMT_JSON) {
		err = warren_value_to_json(v, &text, errstr, errlen);
		*out = text;
		*outlen = text != NULL ? strlen(text) : 0;
	} else {
		err = codec_msgpack_encode_alloc(v, alloc, arg, out, outlen);
		if (err != WARREN_OK) {
			snprintf(errstr, errlen, "cannot encode msgpack: %s", warren_err_str(err));
		}
	}
	warren_value_free(nil);
	return err;
}

warren_value *envelope_error_value(int status, const char *message, warren_value *details)
{
	warren_value *m = warren_map();

	if (warren_map_set(m, "code", warren_str(warren_status_name(status))) != WARREN_OK ||
	    warren_map_set(m, "message", warren_str(message != NULL ? message : "")) != WARREN_OK) {
		warren_value_free(m);
		warren_value_free(details);
		return NULL;
	}
	if (details != NULL && warren_map_set(m, "details", details) != WARREN_OK) {
		warren_value_free(m);
		return NULL;
	}
	return m;
}

void envelope_error_parse(const warren_value *v, const char **message, const warren_value **details)
{
	size_t len;

	*message = "";
	*details = NULL;
	if (!warren_value_get_str(warren_map_get(v, "message"), message, &len)) {
		*message = "";
	}
	*details = warren_map_get(v, "details");
}
