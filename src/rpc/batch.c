/* batch.c: the batch format (batch.h, warren(7) BATCHES). Encoding uses
 * msgpack-c's packer. Decoding goes through codec_msgpack_decode, the
 * bounds-checked decoder every message body already passes (msgpack-c
 * 4.0's unpacker allocates from declared lengths before reading them),
 * then walks the tree: the entries' properties and bodies point into it. */
#include "batch.h"
#include "codec.h"
#include "envelope.h"
#include "value_int.h"
#include "wire.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The short-string properties an entry carries, by key. */
static const struct {
	const char *key;
	amqp_flags_t flag;
	size_t offset;
} str_props[] = {
    {"correlation_id", AMQP_BASIC_CORRELATION_ID_FLAG,
     offsetof(amqp_basic_properties_t, correlation_id)},
    {"message_id", AMQP_BASIC_MESSAGE_ID_FLAG, offsetof(amqp_basic_properties_t, message_id)},
    {"type", AMQP_BASIC_TYPE_FLAG, offsetof(amqp_basic_properties_t, type)},
    {"reply_to", AMQP_BASIC_REPLY_TO_FLAG, offsetof(amqp_basic_properties_t, reply_to)},
    {"app_id", AMQP_BASIC_APP_ID_FLAG, offsetof(amqp_basic_properties_t, app_id)},
    {"content_type", AMQP_BASIC_CONTENT_TYPE_FLAG, offsetof(amqp_basic_properties_t, content_type)},
    {"content_encoding", AMQP_BASIC_CONTENT_ENCODING_FLAG,
     offsetof(amqp_basic_properties_t, content_encoding)},
};
#define NSTR (sizeof(str_props) / sizeof(str_props[0]))

static amqp_bytes_t *str_field(amqp_basic_properties_t *p, size_t i)
{
	return (amqp_bytes_t *)((char *)p + str_props[i].offset);
}

static const amqp_bytes_t *str_field_c(const amqp_basic_properties_t *p, size_t i)
{
	return (const amqp_bytes_t *)((const char *)p + str_props[i].offset);
}

bool batch_is(const amqp_basic_properties_t *p)
{
	size_t n = strlen(BATCH_CONTENT_TYPE);

	return (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) && p->content_type.len == n &&
	       memcmp(p->content_type.bytes, BATCH_CONTENT_TYPE, n) == 0;
}

void batch_props(amqp_basic_properties_t *p, amqp_table_entry_t *headers, bool persistent)
{
	memset(p, 0, sizeof(*p));
	p->_flags =
	    AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
	p->content_type = amqp_cstring_bytes(BATCH_CONTENT_TYPE);
	p->delivery_mode = persistent ? 2 : 1;
	headers[0].key = amqp_cstring_bytes(BATCH_HEADER);
	headers[0].value.kind = AMQP_FIELD_KIND_I64;
	headers[0].value.value.i64 = BATCH_VERSION;
	p->headers = (amqp_table_t){.num_entries = 1, .entries = headers};
}

/* ---------------------------------------------------------------- encoding */

/* A key, a value's header and a 64-bit integer fit in this. */
#define FIELD_BOUND 16

size_t batch_item_bound(const struct batch_item *item)
{
	const amqp_basic_properties_t *p = item->props;
	size_t n = FIELD_BOUND + strlen("body") + item->len;

	for (size_t i = 0; i < NSTR; i++) {
		if (p->_flags & str_props[i].flag) {
			n += FIELD_BOUND + strlen(str_props[i].key) + str_field_c(p, i)->len;
		}
	}
	n += FIELD_BOUND + strlen("timestamp");
	if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
		n += FIELD_BOUND + strlen("headers");
		for (int i = 0; i < p->headers.num_entries; i++) {
			const amqp_table_entry_t *h = &p->headers.entries[i];

			n += 2 * FIELD_BOUND + h->key.len;
			if (h->value.kind == AMQP_FIELD_KIND_UTF8 ||
			    h->value.kind == AMQP_FIELD_KIND_BYTES) {
				n += h->value.value.bytes.len;
			}
		}
	}
	return n;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t len)
{
	return msgpack_pack_str_with_body(pk, s, len);
}

static int pack_headers(msgpack_packer *pk, const amqp_table_t *t)
{
	int rc = pack_str(pk, "headers", 7) || msgpack_pack_map(pk, (size_t)t->num_entries);

	for (int i = 0; rc == 0 && i < t->num_entries; i++) {
		const amqp_table_entry_t *h = &t->entries[i];
		int64_t n;

		rc = pack_str(pk, h->key.bytes, h->key.len);
		if (rc != 0) {
			break;
		}
		if (h->value.kind == AMQP_FIELD_KIND_UTF8) {
			rc = pack_str(pk, h->value.value.bytes.bytes, h->value.value.bytes.len);
		} else if (h->value.kind == AMQP_FIELD_KIND_BYTES) {
			rc = msgpack_pack_bin_with_body(pk, h->value.value.bytes.bytes,
			                                h->value.value.bytes.len);
		} else if (envelope_field_int(&h->value, &n)) {
			rc = msgpack_pack_int64(pk, n);
		} else {
			rc = -2; /* not in the format: the message cannot be batched */
		}
	}
	return rc;
}

static int pack_item(msgpack_packer *pk, const struct batch_item *item)
{
	const amqp_basic_properties_t *p = item->props;
	bool headers = (p->_flags & AMQP_BASIC_HEADERS_FLAG) != 0;
	bool stamp = (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) != 0;
	size_t keys = 1 + (size_t)headers + (size_t)stamp;
	int rc;

	for (size_t i = 0; i < NSTR; i++) {
		keys += (p->_flags & str_props[i].flag) != 0;
	}
	rc = msgpack_pack_map(pk, keys);
	for (size_t i = 0; rc == 0 && i < NSTR; i++) {
		if (p->_flags & str_props[i].flag) {
			const amqp_bytes_t *b = str_field_c(p, i);

			rc = pack_str(pk, str_props[i].key, strlen(str_props[i].key)) ||
			     pack_str(pk, b->bytes, b->len);
		}
	}
	if (rc == 0 && stamp) {
		rc = pack_str(pk, "timestamp", 9) || msgpack_pack_uint64(pk, p->timestamp);
	}
	if (rc == 0 && headers) {
		rc = pack_headers(pk, &p->headers);
	}
	if (rc == 0) {
		rc = pack_str(pk, "body", 4) ||
		     msgpack_pack_bin_with_body(pk, item->body, item->len);
	}
	return rc;
}

warren_err batch_encode(const struct batch_item *items, size_t n, void **out, size_t *outlen)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int rc;

	*out = NULL;
	*outlen = 0;
	if (n == 0 || n > BATCH_MAX_ENTRIES) {
		return WARREN_ERR_INVALID;
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	rc = msgpack_pack_array(&pk, n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		rc = pack_item(&pk, &items[i]);
	}
	if (rc != 0) {
		msgpack_sbuffer_destroy(&sb);
		return rc == -2 ? WARREN_ERR_INVALID : WARREN_ERR_NOMEM;
	}
	*out = sb.data;
	*outlen = sb.size;
	return WARREN_OK;
}

/* ---------------------------------------------------------------- decoding */

static warren_err bad(char *errstr, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static warren_err bad(char *errstr, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errstr, errlen, fmt, ap);
	va_end(ap);
	return WARREN_ERR_DECODE;
}

static warren_err check_version(const amqp_basic_properties_t *p, char *errstr, size_t errlen)
{
	const amqp_field_value_t *h = wire_header(p, BATCH_HEADER);
	int64_t v;

	if (h == NULL) {
		return bad(errstr, errlen, "no %s header (the batch format version)", BATCH_HEADER);
	}
	if (!envelope_field_int(h, &v)) {
		return bad(errstr, errlen, "header %s: expected an integer", BATCH_HEADER);
	}
	if (v != BATCH_VERSION) {
		return bad(errstr, errlen,
		           "batch format version %lld is not supported (this end reads %d)",
		           (long long)v, BATCH_VERSION);
	}
	return WARREN_OK;
}

static const char *type_of(const warren_value *v)
{
	return warren_type_name(v->type);
}

static amqp_bytes_t bytes_in(const warren_value *v)
{
	return (amqp_bytes_t){.len = v->u.s.len, .bytes = v->u.s.p};
}

static warren_err read_headers(size_t idx, const warren_value *m, amqp_table_entry_t *table,
                               amqp_basic_properties_t *p, char *errstr, size_t errlen)
{
	if (m->type != WARREN_MAP) {
		return bad(errstr, errlen, "entry %zu: headers: expected a map, got %s", idx,
		           type_of(m));
	}
	for (size_t i = 0; i < m->u.m.len; i++) {
		const struct value_entry *h = &m->u.m.e[i];
		amqp_table_entry_t *t = &table[i];

		if (h->klen > 128) {
			return bad(errstr, errlen, "entry %zu: header key longer than 128 bytes",
			           idx);
		}
		t->key = (amqp_bytes_t){.len = h->klen, .bytes = h->key};
		switch (h->val->type) {
		case WARREN_STR:
			t->value.kind = AMQP_FIELD_KIND_UTF8;
			t->value.value.bytes = bytes_in(h->val);
			break;
		case WARREN_BIN:
			t->value.kind = AMQP_FIELD_KIND_BYTES;
			t->value.value.bytes = bytes_in(h->val);
			break;
		case WARREN_INT:
			t->value.kind = AMQP_FIELD_KIND_I64;
			t->value.value.i64 = h->val->u.i;
			break;
		default:
			return bad(errstr, errlen,
			           "entry %zu: header %s: expected a string, an integer or "
			           "binary, got %s",
			           idx, h->key, type_of(h->val));
		}
	}
	p->_flags |= AMQP_BASIC_HEADERS_FLAG;
	p->headers = (amqp_table_t){.num_entries = (int)m->u.m.len, .entries = table};
	return WARREN_OK;
}

static warren_err read_str_prop(size_t idx, size_t k, const warren_value *v,
                                amqp_basic_properties_t *p, char *errstr, size_t errlen)
{
	if (v->type != WARREN_STR) {
		return bad(errstr, errlen, "entry %zu: %s: expected a string, got %s", idx,
		           str_props[k].key, type_of(v));
	}
	if (v->u.s.len > 255) {
		return bad(errstr, errlen, "entry %zu: %s: longer than 255 bytes", idx,
		           str_props[k].key);
	}
	p->_flags |= str_props[k].flag;
	*str_field(p, k) = bytes_in(v);
	return WARREN_OK;
}

/* One entry's key KEY with value V. */
static warren_err read_field(size_t idx, const char *key, const warren_value *v,
                             struct batch_entry *e, amqp_table_entry_t *table, char *errstr,
                             size_t errlen)
{
	for (size_t k = 0; k < NSTR; k++) {
		if (strcmp(key, str_props[k].key) == 0) {
			return read_str_prop(idx, k, v, &e->props, errstr, errlen);
		}
	}
	if (strcmp(key, "timestamp") == 0) {
		if (v->type != WARREN_INT || v->u.i < 0) {
			return bad(errstr, errlen,
			           "entry %zu: timestamp: expected a non-negative integer", idx);
		}
		e->props._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
		e->props.timestamp = (uint64_t)v->u.i;
		return WARREN_OK;
	}
	if (strcmp(key, "headers") == 0) {
		return read_headers(idx, v, table, &e->props, errstr, errlen);
	}
	if (strcmp(key, "body") == 0) {
		if (v->type != WARREN_BIN) {
			return bad(errstr, errlen, "entry %zu: body: expected binary, got %s", idx,
			           type_of(v));
		}
		e->body = bytes_in(v);
		return WARREN_OK;
	}
	return bad(errstr, errlen, "entry %zu: unknown key \"%s\"", idx, key);
}

static warren_err read_entry(size_t idx, const warren_value *m, struct batch_entry *e,
                             amqp_table_entry_t *table, char *errstr, size_t errlen)
{
	bool has_body = false;
	warren_err err;

	if (m->type != WARREN_MAP) {
		return bad(errstr, errlen, "entry %zu: expected a map, got %s", idx, type_of(m));
	}
	for (size_t i = 0; i < m->u.m.len; i++) {
		const struct value_entry *f = &m->u.m.e[i];

		err = read_field(idx, f->key, f->val, e, table, errstr, errlen);
		if (err != WARREN_OK) {
			return err;
		}
		has_body = has_body || strcmp(f->key, "body") == 0;
	}
	if (!has_body) {
		return bad(errstr, errlen, "entry %zu: no body", idx);
	}
	return WARREN_OK;
}

/* The header slots every entry needs, in all. */
static size_t count_headers(const warren_value *root)
{
	size_t n = 0;

	for (size_t i = 0; i < root->u.a.len; i++) {
		const warren_value *e = root->u.a.items[i];
		const warren_value *h = e->type == WARREN_MAP ? warren_map_get(e, "headers") : NULL;

		if (h != NULL && h->type == WARREN_MAP) {
			n += h->u.m.len;
		}
	}
	return n;
}

static warren_err read_entries(struct batch *b, char *errstr, size_t errlen)
{
	const warren_value *root = b->root;
	size_t slot = 0;

	if (root->type != WARREN_ARRAY) {
		return bad(errstr, errlen, "batch body: expected an array of entries, got %s",
		           type_of(root));
	}
	if (root->u.a.len == 0 || root->u.a.len > BATCH_MAX_ENTRIES) {
		return bad(errstr, errlen, "batch body: %zu entries (expected 1 to %d)",
		           root->u.a.len, BATCH_MAX_ENTRIES);
	}
	b->entries = calloc(root->u.a.len, sizeof(*b->entries));
	b->table = calloc(count_headers(root) + 1, sizeof(*b->table));
	if (b->entries == NULL || b->table == NULL) {
		return WARREN_ERR_NOMEM;
	}
	for (size_t i = 0; i < root->u.a.len; i++) {
		const warren_value *e = root->u.a.items[i];
		const warren_value *h = e->type == WARREN_MAP ? warren_map_get(e, "headers") : NULL;
		warren_err err = read_entry(i, e, &b->entries[i], b->table + slot, errstr, errlen);

		if (err != WARREN_OK) {
			return err;
		}
		slot += h != NULL && h->type == WARREN_MAP ? h->u.m.len : 0;
		b->n++;
	}
	return WARREN_OK;
}

warren_err batch_decode(const amqp_basic_properties_t *p, const void *body, size_t len,
                        size_t max_size, struct batch **out, char *errstr, size_t errlen)
{
	char why[200];
	struct batch *b = NULL;
	warren_err err;

	*out = NULL;
	err = check_version(p, errstr, errlen);
	if (err != WARREN_OK) {
		goto out;
	}
	if (len > max_size) {
		err =
		    bad(errstr, errlen, "batch of %zu bytes is larger than message.max_size (%zu)",
		        len, max_size);
		goto out;
	}
	b = calloc(1, sizeof(*b));
	if (b == NULL) {
		err = WARREN_ERR_NOMEM;
		goto out;
	}
	err = codec_msgpack_decode(body, len, &b->root, why, sizeof(why));
	if (err == WARREN_ERR_DECODE) {
		bad(errstr, errlen, "batch body: %s", why);
	}
	if (err == WARREN_OK) {
		err = read_entries(b, errstr, errlen);
	}
	/* The properties an entry does not carry are the batch's. */
	for (size_t i = 0; err == WARREN_OK && i < b->n; i++) {
		if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) {
			b->entries[i].props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
			b->entries[i].props.delivery_mode = p->delivery_mode;
		}
	}
out:
	if (err == WARREN_ERR_NOMEM) {
		snprintf(errstr, errlen, "out of memory");
	}
	if (err != WARREN_OK) {
		batch_free(b);
		return err;
	}
	*out = b;
	return WARREN_OK;
}

void batch_free(struct batch *b)
{
	if (b == NULL) {
		return;
	}
	warren_value_free(b->root);
	free(b->entries);
	free(b->table);
	free(b);
}
