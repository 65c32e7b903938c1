/* dlq_json.c: the JSON form of AMQP messages that rpc-dlq exports and
 * imports (the mapping is in dlq_json.h). Plain JSON where it is
 * unambiguous, a "$type" tag everywhere else, so nothing is lost on the way
 * out and back in. */
#include "dlq_json.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "codec.h"
#include "dlq_letter.h"
#include "errstr.h"
#include "utf8.h"
#include "wire.h"

#define TYPE_KEY "$type"

char *dlq_base64(const void *p, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	char *out = malloc(cap);

	if (out != NULL) {
		sodium_bin2base64(out, cap, p, len, sodium_base64_VARIANT_ORIGINAL);
	}
	return out;
}

static json_t *json_base64(const void *p, size_t len)
{
	char *b64 = dlq_base64(p, len);
	json_t *j = b64 != NULL ? json_string(b64) : NULL;

	free(b64);
	return j;
}

/* {"$type": type, key: value}; takes value. */
static json_t *tagged(const char *type, const char *key, json_t *value)
{
	json_t *o = json_object();

	if (o == NULL || value == NULL ||
	    json_object_set_new(o, TYPE_KEY, json_string(type)) != 0 ||
	    json_object_set_new(o, key, value) != 0) {
		json_decref(o);
		json_decref(value);
		return NULL;
	}
	return o;
}

/* Text as a JSON string, or a tagged string when it is not UTF-8. */
static json_t *json_text(amqp_bytes_t b)
{
	if (b.len == 0) {
		return json_string("");
	}
	if (utf8_valid(b.bytes, b.len)) {
		return json_stringn(b.bytes, b.len);
	}
	return tagged("string", "base64", json_base64(b.bytes, b.len));
}

static json_t *json_u64(uint64_t v)
{
	char text[24];

	if (v <= INT64_MAX) {
		return json_integer((json_int_t)v);
	}
	snprintf(text, sizeof(text), "%llu", (unsigned long long)v);
	return json_string(text);
}

static json_t *json_double(double d)
{
	if (isfinite(d)) {
		return json_real(d);
	}
	return json_string(isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
}

/* ------------------------------------------------------------ AMQP -> JSON */

/* A table can be a plain JSON object when its keys are UTF-8 without NUL,
 * unique, and none is "$type". */
static bool plain_keys(const amqp_table_t *t)
{
	for (int i = 0; i < t->num_entries; i++) {
		amqp_bytes_t k = t->entries[i].key;

		if (!utf8_valid(k.bytes, k.len) || memchr(k.bytes, '\0', k.len) != NULL ||
		    (k.len == strlen(TYPE_KEY) && memcmp(k.bytes, TYPE_KEY, k.len) == 0)) {
			return false;
		}
		for (int j = 0; j < i; j++) {
			amqp_bytes_t o = t->entries[j].key;

			if (o.len == k.len && memcmp(o.bytes, k.bytes, k.len) == 0) {
				return false;
			}
		}
	}
	return true;
}

static json_t *table_entries(const amqp_table_t *t)
{
	json_t *list = json_array();

	for (int i = 0; list != NULL && i < t->num_entries; i++) {
		json_t *pair = json_pack("[oo]", json_text(t->entries[i].key),
		                         dlq_json_field(&t->entries[i].value));

		if (pair == NULL || json_array_append_new(list, pair) != 0) {
			json_decref(list);
			return NULL;
		}
	}
	return tagged("table", "entries", list);
}

json_t *dlq_json_table(const amqp_table_t *t)
{
	json_t *o;

	if (!plain_keys(t)) {
		return table_entries(t);
	}
	o = json_object();
	for (int i = 0; o != NULL && i < t->num_entries; i++) {
		const amqp_table_entry_t *e = &t->entries[i];

		if (json_object_setn_new(o, e->key.len > 0 ? e->key.bytes : "", e->key.len,
		                         dlq_json_field(&e->value)) != 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

static json_t *json_array_field(const amqp_array_t *a)
{
	json_t *list = json_array();

	for (int i = 0; list != NULL && i < a->num_entries; i++) {
		if (json_array_append_new(list, dlq_json_field(&a->entries[i])) != 0) {
			json_decref(list);
			return NULL;
		}
	}
	return list;
}

static json_t *json_decimal(amqp_decimal_t d)
{
	json_t *o = json_pack("{s:s, s:i, s:I}", TYPE_KEY, "decimal", "decimals", (int)d.decimals,
	                      "value", (json_int_t)d.value);

	return o;
}

json_t *dlq_json_field(const amqp_field_value_t *v)
{
	const char *name = dlq_kind_name(v->kind);

	switch (v->kind) {
	case AMQP_FIELD_KIND_BOOLEAN:
		return json_boolean(v->value.boolean);
	case AMQP_FIELD_KIND_I8:
		return tagged(name, "value", json_integer(v->value.i8));
	case AMQP_FIELD_KIND_U8:
		return tagged(name, "value", json_integer(v->value.u8));
	case AMQP_FIELD_KIND_I16:
		return tagged(name, "value", json_integer(v->value.i16));
	case AMQP_FIELD_KIND_U16:
		return tagged(name, "value", json_integer(v->value.u16));
	case AMQP_FIELD_KIND_I32:
		return tagged(name, "value", json_integer(v->value.i32));
	case AMQP_FIELD_KIND_U32:
		return tagged(name, "value", json_integer(v->value.u32));
	case AMQP_FIELD_KIND_I64:
		return json_integer(v->value.i64);
	case AMQP_FIELD_KIND_U64:
		return tagged(name, "value", json_u64(v->value.u64));
	case AMQP_FIELD_KIND_TIMESTAMP:
		return tagged(name, "value", json_u64(v->value.u64));
	case AMQP_FIELD_KIND_F32:
		return tagged(name, "value", json_double(v->value.f32));
	case AMQP_FIELD_KIND_F64:
		if (isfinite(v->value.f64)) {
			return json_real(v->value.f64);
		}
		return tagged(name, "value", json_double(v->value.f64));
	case AMQP_FIELD_KIND_DECIMAL:
		return json_decimal(v->value.decimal);
	case AMQP_FIELD_KIND_UTF8:
		return json_text(v->value.bytes);
	case AMQP_FIELD_KIND_BYTES:
		return tagged(name, "value", json_base64(v->value.bytes.bytes, v->value.bytes.len));
	case AMQP_FIELD_KIND_ARRAY:
		return json_array_field(&v->value.array);
	case AMQP_FIELD_KIND_TABLE:
		return dlq_json_table(&v->value.table);
	case AMQP_FIELD_KIND_VOID:
		return json_null();
	}
	return tagged(name, "value", json_null());
}

/* ------------------------------------------------------------ JSON -> AMQP */

static int bad(char *errstr, size_t errlen, const char *path, const char *what)
{
	errstr_set(errstr, errlen, "%s: %s", path, what);
	return -1;
}

static void *pool_copy(amqp_pool_t *pool, const void *p, size_t len)
{
	void *out = amqp_pool_alloc(pool, len > 0 ? len : 1);

	if (out != NULL && len > 0) {
		memcpy(out, p, len);
	}
	return out;
}

/* Decodes base64 text into pool. */
static int from_base64(const json_t *j, amqp_pool_t *pool, const char *path, amqp_bytes_t *out,
                       char *errstr, size_t errlen)
{
	const char *text = json_string_value(j);
	size_t len = json_string_length(j), got = 0;
	unsigned char *buf;

	if (text == NULL) {
		return bad(errstr, errlen, path, "expected a base64 string");
	}
	buf = amqp_pool_alloc(pool, len / 4 * 3 + 3);
	if (buf == NULL) {
		return bad(errstr, errlen, path, "out of memory");
	}
	if (sodium_base642bin(buf, len / 4 * 3 + 3, text, len, NULL, &got, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0) {
		return bad(errstr, errlen, path, "not valid base64");
	}
	*out = (amqp_bytes_t){.len = got, .bytes = buf};
	return 0;
}

/* Fails unless every key of o is one of allowed (NULL-terminated). */
static int only_keys(const json_t *o, const char *const *allowed, const char *path, char *errstr,
                     size_t errlen)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)o, key, v)
	{
		bool ok = false;

		for (int i = 0; allowed[i] != NULL && !ok; i++) {
			ok = strcmp(key, allowed[i]) == 0;
		}
		if (!ok) {
			errstr_set(errstr, errlen, "%s: unknown key \"%s\"", path, key);
			return -1;
		}
	}
	return 0;
}

/* An integer from min to max, or a decimal string for big uint64 values. */
static int int_in(const json_t *j, int64_t min, int64_t max, const char *path, int64_t *out,
                  char *errstr, size_t errlen)
{
	if (!json_is_integer(j) || json_integer_value(j) < min || json_integer_value(j) > max) {
		errstr_set(errstr, errlen, "%s: expected an integer from %lld to %lld", path,
		           (long long)min, (long long)max);
		return -1;
	}
	*out = json_integer_value(j);
	return 0;
}

static int u64_from_json(const json_t *j, const char *path, uint64_t *out, char *errstr,
                         size_t errlen)
{
	const char *s = json_string_value(j);
	char *end = NULL;
	int64_t v;

	if (s != NULL && s[0] >= '0' && s[0] <= '9') {
		*out = strtoull(s, &end, 10);
		if (*end == '\0') {
			return 0;
		}
	}
	if (int_in(j, 0, INT64_MAX, path, &v, errstr, errlen) != 0) {
		return -1;
	}
	*out = (uint64_t)v;
	return 0;
}

static int double_from_json(const json_t *j, const char *path, double *out, char *errstr,
                            size_t errlen)
{
	const char *s = json_string_value(j);

	if (json_is_number(j)) {
		*out = json_number_value(j);
	} else if (s != NULL && strcmp(s, "NaN") == 0) {
		*out = NAN;
	} else if (s != NULL && strcmp(s, "Infinity") == 0) {
		*out = INFINITY;
	} else if (s != NULL && strcmp(s, "-Infinity") == 0) {
		*out = -INFINITY;
	} else {
		return bad(errstr, errlen, path,
		           "expected a number, \"NaN\", \"Infinity\" or \"-Infinity\"");
	}
	return 0;
}

static int table_from_object(const json_t *o, amqp_pool_t *pool, const char *path,
                             amqp_table_t *out, char *errstr, size_t errlen);
static int table_from_entries(const json_t *list, amqp_pool_t *pool, const char *path,
                              amqp_table_t *out, char *errstr, size_t errlen);

/* The fixed-width integer kinds: name, kind, range. */
static const struct int_kind {
	const char *name;
	uint8_t kind;
	int64_t min, max;
} int_kinds[] = {
    {"int8", AMQP_FIELD_KIND_I8, INT8_MIN, INT8_MAX},
    {"uint8", AMQP_FIELD_KIND_U8, 0, UINT8_MAX},
    {"int16", AMQP_FIELD_KIND_I16, INT16_MIN, INT16_MAX},
    {"uint16", AMQP_FIELD_KIND_U16, 0, UINT16_MAX},
    {"int32", AMQP_FIELD_KIND_I32, INT32_MIN, INT32_MAX},
    {"uint32", AMQP_FIELD_KIND_U32, 0, UINT32_MAX},
    {"int64", AMQP_FIELD_KIND_I64, INT64_MIN, INT64_MAX},
};

static void set_int(amqp_field_value_t *out, uint8_t kind, int64_t v)
{
	out->kind = kind;
	switch (kind) {
	case AMQP_FIELD_KIND_I8:
		out->value.i8 = (int8_t)v;
		break;
	case AMQP_FIELD_KIND_U8:
		out->value.u8 = (uint8_t)v;
		break;
	case AMQP_FIELD_KIND_I16:
		out->value.i16 = (int16_t)v;
		break;
	case AMQP_FIELD_KIND_U16:
		out->value.u16 = (uint16_t)v;
		break;
	case AMQP_FIELD_KIND_I32:
		out->value.i32 = (int32_t)v;
		break;
	case AMQP_FIELD_KIND_U32:
		out->value.u32 = (uint32_t)v;
		break;
	default:
		out->value.i64 = v;
		break;
	}
}

static int tagged_int(const struct int_kind *k, const json_t *o, const char *path,
                      amqp_field_value_t *out, char *errstr, size_t errlen)
{
	static const char *const keys[] = {TYPE_KEY, "value", NULL};
	char sub[512];
	int64_t v;

	snprintf(sub, sizeof(sub), "%s.value", path);
	if (only_keys(o, keys, path, errstr, errlen) != 0 ||
	    int_in(json_object_get(o, "value"), k->min, k->max, sub, &v, errstr, errlen) != 0) {
		return -1;
	}
	set_int(out, k->kind, v);
	return 0;
}

static int tagged_decimal(const json_t *o, const char *path, amqp_field_value_t *out, char *errstr,
                          size_t errlen)
{
	static const char *const keys[] = {TYPE_KEY, "decimals", "value", NULL};
	char sub[512], sub2[512];
	int64_t d, v;

	snprintf(sub, sizeof(sub), "%s.decimals", path);
	snprintf(sub2, sizeof(sub2), "%s.value", path);
	if (only_keys(o, keys, path, errstr, errlen) != 0 ||
	    int_in(json_object_get(o, "decimals"), 0, UINT8_MAX, sub, &d, errstr, errlen) != 0 ||
	    int_in(json_object_get(o, "value"), 0, UINT32_MAX, sub2, &v, errstr, errlen) != 0) {
		return -1;
	}
	out->kind = AMQP_FIELD_KIND_DECIMAL;
	out->value.decimal.decimals = (uint8_t)d;
	out->value.decimal.value = (uint32_t)v;
	return 0;
}

/* uint64, timestamp, float32, float64, bytes, string: one "value" (or
 * "base64") member. */
static int tagged_scalar(const char *type, const json_t *o, amqp_pool_t *pool, const char *path,
                         amqp_field_value_t *out, char *errstr, size_t errlen)
{
	static const char *const keys[] = {TYPE_KEY, "value", NULL};
	static const char *const str_keys[] = {TYPE_KEY, "base64", NULL};
	bool is_str = strcmp(type, "string") == 0;
	const json_t *v = json_object_get(o, is_str ? "base64" : "value");
	char sub[512];
	double d;

	snprintf(sub, sizeof(sub), "%s.%s", path, is_str ? "base64" : "value");
	if (only_keys(o, is_str ? str_keys : keys, path, errstr, errlen) != 0) {
		return -1;
	}
	if (strcmp(type, "uint64") == 0 || strcmp(type, "timestamp") == 0) {
		out->kind = type[0] == 'u' ? AMQP_FIELD_KIND_U64 : AMQP_FIELD_KIND_TIMESTAMP;
		return u64_from_json(v, sub, &out->value.u64, errstr, errlen);
	}
	if (strcmp(type, "float32") == 0 || strcmp(type, "float64") == 0) {
		if (double_from_json(v, sub, &d, errstr, errlen) != 0) {
			return -1;
		}
		out->kind = type[5] == '3' ? AMQP_FIELD_KIND_F32 : AMQP_FIELD_KIND_F64;
		if (out->kind == AMQP_FIELD_KIND_F32) {
			out->value.f32 = (float)d;
		} else {
			out->value.f64 = d;
		}
		return 0;
	}
	out->kind = is_str ? AMQP_FIELD_KIND_UTF8 : AMQP_FIELD_KIND_BYTES;
	return from_base64(v, pool, sub, &out->value.bytes, errstr, errlen);
}

static int tagged_from_json(const json_t *o, amqp_pool_t *pool, const char *path,
                            amqp_field_value_t *out, char *errstr, size_t errlen)
{
	static const char *const scalars[] = {"uint64", "timestamp", "float32", "float64",
	                                      "bytes",  "string",    NULL};
	static const char *const table_keys[] = {TYPE_KEY, "entries", NULL};
	const char *type = json_string_value(json_object_get(o, TYPE_KEY));

	if (type == NULL) {
		return bad(errstr, errlen, path, "\"$type\" must be a string");
	}
	for (size_t i = 0; i < sizeof(int_kinds) / sizeof(int_kinds[0]); i++) {
		if (strcmp(type, int_kinds[i].name) == 0) {
			return tagged_int(&int_kinds[i], o, path, out, errstr, errlen);
		}
	}
	for (int i = 0; scalars[i] != NULL; i++) {
		if (strcmp(type, scalars[i]) == 0) {
			return tagged_scalar(type, o, pool, path, out, errstr, errlen);
		}
	}
	if (strcmp(type, "decimal") == 0) {
		return tagged_decimal(o, path, out, errstr, errlen);
	}
	if (strcmp(type, "table") == 0) {
		out->kind = AMQP_FIELD_KIND_TABLE;
		if (only_keys(o, table_keys, path, errstr, errlen) != 0) {
			return -1;
		}
		return table_from_entries(json_object_get(o, "entries"), pool, path,
		                          &out->value.table, errstr, errlen);
	}
	errstr_set(errstr, errlen, "%s: unknown \"$type\" \"%s\"", path, type);
	return -1;
}

static int array_from_json(const json_t *a, amqp_pool_t *pool, const char *path,
                           amqp_field_value_t *out, char *errstr, size_t errlen)
{
	size_t n = json_array_size(a);
	amqp_field_value_t *items = amqp_pool_alloc(pool, (n > 0 ? n : 1) * sizeof(*items));

	if (items == NULL || n > INT32_MAX) {
		return bad(errstr, errlen, path, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		char sub[512];

		snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
		if (dlq_field_from_json(json_array_get(a, i), pool, sub, &items[i], errstr,
		                        errlen) != 0) {
			return -1;
		}
	}
	out->kind = AMQP_FIELD_KIND_ARRAY;
	out->value.array = (amqp_array_t){.num_entries = (int)n, .entries = items};
	return 0;
}

int dlq_field_from_json(const json_t *j, amqp_pool_t *pool, const char *path,
                        amqp_field_value_t *out, char *errstr, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	switch (json_typeof(j)) {
	case JSON_STRING:
		out->kind = AMQP_FIELD_KIND_UTF8;
		out->value.bytes.len = json_string_length(j);
		out->value.bytes.bytes =
		    pool_copy(pool, json_string_value(j), json_string_length(j));
		return out->value.bytes.bytes != NULL ? 0
		                                      : bad(errstr, errlen, path, "out of memory");
	case JSON_INTEGER:
		set_int(out, AMQP_FIELD_KIND_I64, json_integer_value(j));
		return 0;
	case JSON_REAL:
		out->kind = AMQP_FIELD_KIND_F64;
		out->value.f64 = json_real_value(j);
		return 0;
	case JSON_TRUE:
	case JSON_FALSE:
		out->kind = AMQP_FIELD_KIND_BOOLEAN;
		out->value.boolean = json_is_true(j);
		return 0;
	case JSON_NULL:
		out->kind = AMQP_FIELD_KIND_VOID;
		return 0;
	case JSON_ARRAY:
		return array_from_json(j, pool, path, out, errstr, errlen);
	case JSON_OBJECT:
		if (json_object_get(j, TYPE_KEY) != NULL) {
			return tagged_from_json(j, pool, path, out, errstr, errlen);
		}
		out->kind = AMQP_FIELD_KIND_TABLE;
		return table_from_object(j, pool, path, &out->value.table, errstr, errlen);
	}
	return bad(errstr, errlen, path, "unexpected JSON value");
}

static int table_from_object(const json_t *o, amqp_pool_t *pool, const char *path,
                             amqp_table_t *out, char *errstr, size_t errlen)
{
	size_t n = json_object_size(o), i = 0;
	amqp_table_entry_t *entries = amqp_pool_alloc(pool, (n > 0 ? n : 1) * sizeof(*entries));
	const char *key;
	size_t klen;
	json_t *v;

	if (entries == NULL || n > INT32_MAX) {
		return bad(errstr, errlen, path, "out of memory");
	}
	json_object_keylen_foreach((json_t *)o, key, klen, v)
	{
		char sub[512];

		snprintf(sub, sizeof(sub), "%s.%s", path, key);
		entries[i].key = (amqp_bytes_t){.len = klen, .bytes = pool_copy(pool, key, klen)};
		if (entries[i].key.bytes == NULL) {
			return bad(errstr, errlen, path, "out of memory");
		}
		if (dlq_field_from_json(v, pool, sub, &entries[i].value, errstr, errlen) != 0) {
			return -1;
		}
		i++;
	}
	*out = (amqp_table_t){.num_entries = (int)n, .entries = entries};
	return 0;
}

static int table_from_entries(const json_t *list, amqp_pool_t *pool, const char *path,
                              amqp_table_t *out, char *errstr, size_t errlen)
{
	size_t n = json_array_size(list);
	amqp_table_entry_t *entries = amqp_pool_alloc(pool, (n > 0 ? n : 1) * sizeof(*entries));

	if (!json_is_array(list)) {
		return bad(errstr, errlen, path,
		           "\"entries\" must be an array of [key, value] pairs");
	}
	if (entries == NULL || n > INT32_MAX) {
		return bad(errstr, errlen, path, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *pair = json_array_get(list, i);
		amqp_field_value_t key;
		char sub[512];

		snprintf(sub, sizeof(sub), "%s.entries[%zu]", path, i);
		if (!json_is_array(pair) || json_array_size(pair) != 2) {
			return bad(errstr, errlen, sub, "expected a [key, value] pair");
		}
		if (dlq_field_from_json(json_array_get(pair, 0), pool, sub, &key, errstr, errlen) !=
		    0) {
			return -1;
		}
		if (key.kind != AMQP_FIELD_KIND_UTF8) {
			return bad(errstr, errlen, sub, "a key must be a string");
		}
		entries[i].key = key.value.bytes;
		if (dlq_field_from_json(json_array_get(pair, 1), pool, sub, &entries[i].value,
		                        errstr, errlen) != 0) {
			return -1;
		}
	}
	*out = (amqp_table_t){.num_entries = (int)n, .entries = entries};
	return 0;
}

/* -------------------------------------------------------------- properties */

enum prop_type { PROP_STR, PROP_U8, PROP_U64 };

static const struct prop {
	const char *name;
	amqp_flags_t flag;
	size_t offset;
	enum prop_type type;
} prop_defs[] = {
    {"content_type", AMQP_BASIC_CONTENT_TYPE_FLAG, offsetof(amqp_basic_properties_t, content_type),
     PROP_STR},
    {"content_encoding", AMQP_BASIC_CONTENT_ENCODING_FLAG,
     offsetof(amqp_basic_properties_t, content_encoding), PROP_STR},
    {"delivery_mode", AMQP_BASIC_DELIVERY_MODE_FLAG,
     offsetof(amqp_basic_properties_t, delivery_mode), PROP_U8},
    {"priority", AMQP_BASIC_PRIORITY_FLAG, offsetof(amqp_basic_properties_t, priority), PROP_U8},
    {"correlation_id", AMQP_BASIC_CORRELATION_ID_FLAG,
     offsetof(amqp_basic_properties_t, correlation_id), PROP_STR},
    {"reply_to", AMQP_BASIC_REPLY_TO_FLAG, offsetof(amqp_basic_properties_t, reply_to), PROP_STR},
    {"expiration", AMQP_BASIC_EXPIRATION_FLAG, offsetof(amqp_basic_properties_t, expiration),
     PROP_STR},
    {"message_id", AMQP_BASIC_MESSAGE_ID_FLAG, offsetof(amqp_basic_properties_t, message_id),
     PROP_STR},
    {"timestamp", AMQP_BASIC_TIMESTAMP_FLAG, offsetof(amqp_basic_properties_t, timestamp),
     PROP_U64},
    {"type", AMQP_BASIC_TYPE_FLAG, offsetof(amqp_basic_properties_t, type), PROP_STR},
    {"user_id", AMQP_BASIC_USER_ID_FLAG, offsetof(amqp_basic_properties_t, user_id), PROP_STR},
    {"app_id", AMQP_BASIC_APP_ID_FLAG, offsetof(amqp_basic_properties_t, app_id), PROP_STR},
    {"cluster_id", AMQP_BASIC_CLUSTER_ID_FLAG, offsetof(amqp_basic_properties_t, cluster_id),
     PROP_STR},
};

#define NPROPS (sizeof(prop_defs) / sizeof(prop_defs[0]))

static json_t *prop_json(const amqp_basic_properties_t *p, const struct prop *d)
{
	const char *base = (const char *)p + d->offset;

	switch (d->type) {
	case PROP_STR:
		return json_text(*(const amqp_bytes_t *)base);
	case PROP_U8:
		return json_integer(*(const uint8_t *)base);
	case PROP_U64:
		return json_u64(*(const uint64_t *)base);
	}
	return NULL;
}

/* The headers, without x-delivery-count when exporting. */
static json_t *headers_json(const amqp_table_t *h, bool export)
{
	amqp_table_entry_t *kept = malloc(((size_t)h->num_entries + 1) * sizeof(*kept));
	amqp_table_t t = {0, kept};
	json_t *j;

	if (kept == NULL) {
		return NULL;
	}
	for (int i = 0; i < h->num_entries; i++) {
		amqp_bytes_t k = h->entries[i].key;

		if (!export || !wire_key_is(k, WIRE_H_DELIVERY_COUNT)) {
			kept[t.num_entries++] = h->entries[i];
		}
	}
	j = dlq_json_table(&t);
	free(kept);
	return j;
}

json_t *dlq_json_properties(const amqp_basic_properties_t *p, bool export)
{
	json_t *o = json_object();

	for (size_t i = 0; o != NULL && i < NPROPS; i++) {
		if ((p->_flags & prop_defs[i].flag) &&
		    json_object_set_new(o, prop_defs[i].name, prop_json(p, &prop_defs[i])) != 0) {
			json_decref(o);
			return NULL;
		}
	}
	if (o != NULL && (p->_flags & AMQP_BASIC_HEADERS_FLAG)) {
		json_t *h = headers_json(&p->headers, export);

		/* Headers that held x-delivery-count alone were added by the broker. */
		if (export && json_is_object(h) && json_object_size(h) == 0) {
			json_decref(h);
		} else if (json_object_set_new(o, "headers", h) != 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

static int prop_from_json(const struct prop *d, const json_t *j, amqp_pool_t *pool,
                          amqp_basic_properties_t *out, char *errstr, size_t errlen)
{
	char *base = (char *)out + d->offset, path[64];
	amqp_field_value_t v;
	int64_t n;

	snprintf(path, sizeof(path), "properties.%s", d->name);
	switch (d->type) {
	case PROP_STR:
		if (dlq_field_from_json(j, pool, path, &v, errstr, errlen) != 0) {
			return -1;
		}
		if (v.kind != AMQP_FIELD_KIND_UTF8 || v.value.bytes.len > 255) {
			return bad(errstr, errlen, path, "expected a string of at most 255 bytes");
		}
		*(amqp_bytes_t *)base = v.value.bytes;
		break;
	case PROP_U8:
		if (int_in(j, 0, UINT8_MAX, path, &n, errstr, errlen) != 0) {
			return -1;
		}
		*(uint8_t *)base = (uint8_t)n;
		break;
	case PROP_U64:
		if (u64_from_json(j, path, (uint64_t *)base, errstr, errlen) != 0) {
			return -1;
		}
		break;
	}
	out->_flags |= d->flag;
	return 0;
}

static int props_from_json(const json_t *o, amqp_pool_t *pool, amqp_basic_properties_t *out,
                           char *errstr, size_t errlen)
{
	const char *key;
	json_t *v;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(o)) {
		return bad(errstr, errlen, "properties", "expected an object");
	}
	json_object_foreach((json_t *)o, key, v)
	{
		const struct prop *d = NULL;
		amqp_field_value_t h;

		for (size_t i = 0; i < NPROPS && d == NULL; i++) {
			d = strcmp(key, prop_defs[i].name) == 0 ? &prop_defs[i] : NULL;
		}
		if (d != NULL) {
			if (prop_from_json(d, v, pool, out, errstr, errlen) != 0) {
				return -1;
			}
			continue;
		}
		if (strcmp(key, "headers") != 0) {
			errstr_set(errstr, errlen, "properties: unknown key \"%s\"", key);
			return -1;
		}
		if (dlq_field_from_json(v, pool, "properties.headers", &h, errstr, errlen) != 0) {
			return -1;
		}
		if (h.kind != AMQP_FIELD_KIND_TABLE) {
			return bad(errstr, errlen, "properties.headers", "expected an object");
		}
		out->headers = h.value.table;
		out->_flags |= AMQP_BASIC_HEADERS_FLAG;
	}
	return 0;
}

/* -------------------------------------------------------------------- body */

static json_t *value_json(const warren_value *v);

static json_t *container_json(const warren_value *v)
{
	json_t *out = warren_value_type(v) == WARREN_MAP ? json_object() : json_array();

	for (size_t i = 0; out != NULL && i < warren_value_len(v); i++) {
		const char *key;
		const warren_value *item;
		int rc;

		if (warren_value_type(v) == WARREN_MAP) {
			warren_map_at(v, i, &key, &item);
			rc = json_object_set_new(out, key, value_json(item));
		} else {
			rc = json_array_append_new(out, value_json(warren_array_at(v, i)));
		}
		if (rc != 0) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

static json_t *value_json(const warren_value *v)
{
	const void *bin;
	const char *s;
	size_t len;
	int64_t i;
	double d;
	bool b;

	switch (warren_value_type(v)) {
	case WARREN_NIL:
		return json_null();
	case WARREN_BOOL:
		warren_value_get_bool(v, &b);
		return json_boolean(b);
	case WARREN_INT:
		warren_value_get_int(v, &i);
		return json_integer(i);
	case WARREN_FLOAT:
		warren_value_get_float(v, &d);
		return isfinite(d) ? json_real(d) : tagged("float64", "value", json_double(d));
	case WARREN_STR:
		warren_value_get_str(v, &s, &len);
		return json_stringn(s, len);
	case WARREN_BIN:
		warren_value_get_bin(v, &bin, &len);
		return tagged("bytes", "value", json_base64(bin, len));
	case WARREN_ARRAY:
	case WARREN_MAP:
		return container_json(v);
	}
	return NULL;
}

/* The media type of content_type without parameters equals want. */
static bool media_is(amqp_bytes_t ct, const char *want)
{
	size_t n = ct.len, w = strlen(want);
	const char *semi = memchr(ct.bytes, ';', ct.len);

	if (semi != NULL) {
		n = (size_t)(semi - (const char *)ct.bytes);
	}
	while (n > 0 && ((const char *)ct.bytes)[n - 1] == ' ') {
		n--;
	}
	return n == w && strncasecmp(ct.bytes, want, w) == 0;
}

json_t *dlq_json_body(const amqp_basic_properties_t *p, amqp_bytes_t body, char *why, size_t whylen)
{
	bool has_ct = (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) && p->content_type.len > 0;
	warren_value *v = NULL;
	char detail[300];
	json_t *j;

	if (body.len == 0) {
		return json_null();
	}
	if ((p->_flags & AMQP_BASIC_CONTENT_ENCODING_FLAG) && p->content_encoding.len > 0) {
		char enc[64];

		dlq_printable(enc, sizeof(enc), p->content_encoding.bytes, p->content_encoding.len);
		if (strcmp(enc, "x-warren-sealed") == 0) {
			errstr_set(why, whylen,
			           "encrypted (content_encoding x-warren-sealed): only its service can "
			           "read it");
		} else {
			errstr_set(why, whylen, "content encoding \"%s\" is not decoded", enc);
		}
		return NULL;
	}
	if (!has_ct || media_is(p->content_type, "application/msgpack")) {
		if (codec_msgpack_decode(body.bytes, body.len, &v, detail, sizeof(detail)) !=
		    WARREN_OK) {
			errstr_set(why, whylen, "not valid msgpack: %s", detail);
			return NULL;
		}
	} else if (media_is(p->content_type, "application/json")) {
		if (warren_value_from_json(body.bytes, body.len, &v, detail, sizeof(detail)) !=
		    WARREN_OK) {
			errstr_set(why, whylen, "not valid JSON: %s", detail);
			return NULL;
		}
	} else {
		char ct[256];

		dlq_printable(ct, sizeof(ct), p->content_type.bytes, p->content_type.len);
		errstr_set(why, whylen,
		           "content type \"%s\" is neither application/msgpack nor "
		           "application/json",
		           ct);
		return NULL;
	}
	j = value_json(v);
	warren_value_free(v);
	if (j == NULL) {
		errstr_set(why, whylen, "out of memory");
	}
	return j;
}

/* ------------------------------------------------------------ export lines */

json_t *dlq_json_export(const amqp_basic_properties_t *p, amqp_bytes_t body)
{
	json_t *o = json_object(), *decoded;
	char why[400];

	if (o == NULL || json_object_set_new(o, "properties", dlq_json_properties(p, true)) != 0 ||
	    json_object_set_new(o, "body", json_base64(body.bytes, body.len)) != 0) {
		json_decref(o);
		return NULL;
	}
	decoded = dlq_json_body(p, body, why, sizeof(why));
	if (json_object_set_new(o, decoded != NULL ? "body_json" : "body_error",
	                        decoded != NULL ? decoded : json_string(why)) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int dlq_json_import(const json_t *j, amqp_pool_t *pool, amqp_basic_properties_t *props,
                    amqp_bytes_t *body, char *errstr, size_t errlen)
{
	static const char *const keys[] = {"properties", "body", "body_json", "body_error", NULL};

	if (!json_is_object(j)) {
		errstr_set(errstr, errlen, "expected a JSON object");
		return -1;
	}
	if (only_keys(j, keys, "the line", errstr, errlen) != 0) {
		return -1;
	}
	if (json_object_get(j, "properties") == NULL) {
		errstr_set(errstr, errlen, "no \"properties\"");
		return -1;
	}
	if (json_object_get(j, "body") == NULL) {
		errstr_set(errstr, errlen, "no \"body\"");
		return -1;
	}
	if (props_from_json(json_object_get(j, "properties"), pool, props, errstr, errlen) != 0) {
		return -1;
	}
	return from_base64(json_object_get(j, "body"), pool, "body", body, errstr, errlen);
}
