/* value_json.c: JSON text to and from warren_value. Parsing is jansson's
 * (strict: duplicate keys, int64 overflow, bad UTF-8 and trailing bytes are
 * errors); writing is done here, straight from the tree, compact, keys in
 * insertion order, floats in their shortest round-trip form. */
#include "codec.h"
#include "errstr.h"
#include "utf8.h"
#include "value_int.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- reading */

static warren_err from_jansson(const json_t *j, int depth, warren_value **out, char *errstr,
                               size_t errlen);

/* The items of JSON array j, converted, into the array c. */
static warren_err items_from_jansson(warren_value *c, const json_t *j, int depth, char *errstr,
                                     size_t errlen)
{
	warren_err err = WARREN_OK;

	for (size_t i = 0; i < json_array_size(j) && err == WARREN_OK; i++) {
		warren_value *item = NULL;
		err = from_jansson(json_array_get(j, i), depth + 1, &item, errstr, errlen);
		if (err == WARREN_OK) {
			err = warren_array_push(c, item);
		}
	}
	return err;
}

/* The members of JSON object j, converted, into the map c. */
static warren_err entries_from_jansson(warren_value *c, const json_t *j, int depth, char *errstr,
                                       size_t errlen)
{
	warren_err err = WARREN_OK;
	const char *key;
	size_t klen;
	json_t *val;

	json_object_keylen_foreach((json_t *)j, key, klen, val)
	{
		warren_value *item = NULL;
		err = from_jansson(val, depth + 1, &item, errstr, errlen);
		if (err == WARREN_OK) {
			err = value_map_add(c, key, klen, item, false);
		}
		if (err != WARREN_OK) {
			break;
		}
	}
	return err;
}

static warren_err container_from_jansson(const json_t *j, int depth, warren_value **out,
                                         char *errstr, size_t errlen)
{
	bool array = json_is_array(j);
	warren_value *c;
	warren_err err;

	if (depth >= CODEC_MAX_DEPTH) {
		errstr_set(errstr, errlen, "nested deeper than %d levels", CODEC_MAX_DEPTH);
		return WARREN_ERR_DECODE;
	}
	c = value_container(array ? WARREN_ARRAY : WARREN_MAP,
	                    array ? json_array_size(j) : json_object_size(j));
	if (c == NULL) {
		return WARREN_ERR_NOMEM;
	}
	err = array ? items_from_jansson(c, j, depth, errstr, errlen)
	            : entries_from_jansson(c, j, depth, errstr, errlen);
	if (err != WARREN_OK) {
		warren_value_free(c);
		return err;
	}
	*out = c;
	return WARREN_OK;
}

static warren_err from_jansson(const json_t *j, int depth, warren_value **out, char *errstr,
                               size_t errlen)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
	case JSON_ARRAY:
		return container_from_jansson(j, depth, out, errstr, errlen);
	case JSON_STRING:
		*out = warren_strn(json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		*out = warren_int(json_integer_value(j));
		break;
	case JSON_REAL:
		*out = warren_float(json_real_value(j));
		break;
	case JSON_TRUE:
		*out = warren_bool(true);
		break;
	case JSON_FALSE:
		*out = warren_bool(false);
		break;
	default:
		*out = warren_nil();
		break;
	}
	return *out != NULL ? WARREN_OK : WARREN_ERR_NOMEM;
}

warren_err warren_value_from_json(const char *text, size_t len, warren_value **out, char *errstr,
                                  size_t errlen)
{
	json_error_t jerr;
	json_t *j;
	warren_err err;

	if (out == NULL || (text == NULL && len > 0)) {
		errstr_set(errstr, errlen, "no JSON text");
		return WARREN_ERR_INVALID;
	}
	*out = NULL;
	j = json_loadb(text != NULL ? text : "", len,
	               JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (j == NULL) {
		if (len == 0) {
			errstr_set(errstr, errlen, "empty JSON text");
		} else {
			errstr_set(errstr, errlen, "line %d, column %d: %s", jerr.line, jerr.column,
			           jerr.text);
		}
		return WARREN_ERR_DECODE;
	}
	err = from_jansson(j, 0, out, errstr, errlen);
	json_decref(j);
	return err;
}

/* ---------------------------------------------------------------- writing */

struct jbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void put(struct jbuf *b, const char *s, size_t n)
{
	if (b->oom) {
		return;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap != 0 ? b->cap : 64;
		char *p;
		while (cap < b->len + n + 1) {
			cap *= 2;
		}
		p = realloc(b->p, cap);
		if (p == NULL) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void put_str(struct jbuf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* The escape of byte c (a control character, '"' or '\\') into esc; its
 * length. */
static size_t escape(unsigned char c, char esc[6])
{
	static const char hex[] = "0123456789abcdef";

	esc[0] = '\\';
	switch (c) {
	case '"':
	case '\\':
		esc[1] = (char)c;
		return 2;
	case '\n':
		esc[1] = 'n';
		return 2;
	case '\r':
		esc[1] = 'r';
		return 2;
	case '\t':
		esc[1] = 't';
		return 2;
	case '\b':
		esc[1] = 'b';
		return 2;
	case '\f':
		esc[1] = 'f';
		return 2;
	default:
		memcpy(esc + 1, "u00", 3);
		esc[4] = hex[c >> 4];
		esc[5] = hex[c & 15];
		return 6;
	}
}

/* A JSON string literal of n bytes (already checked to be UTF-8). */
static void put_quoted(struct jbuf *b, const char *s, size_t n)
{
	size_t run = 0; /* start of the pending run of plain bytes */

	put(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6];

		if (c >= 0x20 && c != '"' && c != '\\') {
			continue;
		}
		put(b, s + run, i - run);
		run = i + 1;
		put(b, esc, escape(c, esc));
	}
	put(b, s + run, n - run);
	put(b, "\"", 1);
}

/* The shortest of %.15g..%.17g that reads back as d, always with a '.' or
 * an exponent so that it reads back as a float. */
static void put_float(struct jbuf *b, double d)
{
	char text[40];

	for (int prec = 15; prec <= 17; prec++) {
		snprintf(text, sizeof(text), "%.*g", prec, d);
		if (strtod(text, NULL) == d) {
			break;
		}
	}
	put_str(b, text);
	if (strpbrk(text, ".eE") == NULL) {
		put(b, ".0", 2);
	}
}

static warren_err to_json(const warren_value *v, struct jbuf *b, char *errstr, size_t errlen);

static warren_err array_to_json(const warren_value *v, struct jbuf *b, char *errstr, size_t errlen)
{
	warren_err err = WARREN_OK;

	put(b, "[", 1);
	for (size_t i = 0; i < v->u.a.len && err == WARREN_OK; i++) {
		if (i > 0) {
			put(b, ",", 1);
		}
		err = to_json(v->u.a.items[i], b, errstr, errlen);
	}
	put(b, "]", 1);
	return err;
}

static warren_err map_to_json(const warren_value *v, struct jbuf *b, char *errstr, size_t errlen)
{
	warren_err err = WARREN_OK;

	put(b, "{", 1);
	for (size_t i = 0; i < v->u.m.len && err == WARREN_OK; i++) {
		const struct value_entry *e = &v->u.m.e[i];
		if (!utf8_valid(e->key, e->klen)) {
			errstr_set(errstr, errlen, "a map key is not valid UTF-8");
			return WARREN_ERR_INVALID;
		}
		if (i > 0) {
			put(b, ",", 1);
		}
		put_quoted(b, e->key, e->klen);
		put(b, ":", 1);
		err = to_json(e->val, b, errstr, errlen);
	}
	put(b, "}", 1);
	return err;
}

/* A float, a string or binary data: what has no JSON form is refused. */
static warren_err leaf_to_json(const warren_value *v, struct jbuf *b, char *errstr, size_t errlen)
{
	if (v->type == WARREN_FLOAT) {
		if (!isfinite(v->u.d)) {
			errstr_set(errstr, errlen, "the float %s has no JSON form",
			           isnan(v->u.d) ? "NaN"
			           : v->u.d > 0  ? "infinity"
			                         : "-infinity");
			return WARREN_ERR_INVALID;
		}
		put_float(b, v->u.d);
		return WARREN_OK;
	}
	if (v->type == WARREN_BIN) {
		errstr_set(errstr, errlen, "binary data (%zu bytes) has no JSON form", v->u.s.len);
		return WARREN_ERR_INVALID;
	}
	if (!utf8_valid(v->u.s.p, v->u.s.len)) {
		errstr_set(errstr, errlen, "a string is not valid UTF-8");
		return WARREN_ERR_INVALID;
	}
	put_quoted(b, v->u.s.p, v->u.s.len);
	return WARREN_OK;
}

static warren_err to_json(const warren_value *v, struct jbuf *b, char *errstr, size_t errlen)
{
	char num[24];

	switch (warren_value_type(v)) {
	case WARREN_NIL:
		put(b, "null", 4);
		return WARREN_OK;
	case WARREN_BOOL:
		put_str(b, v->u.b ? "true" : "false");
		return WARREN_OK;
	case WARREN_INT:
		snprintf(num, sizeof(num), "%lld", (long long)v->u.i);
		put_str(b, num);
		return WARREN_OK;
	case WARREN_FLOAT:
	case WARREN_STR:
	case WARREN_BIN:
		return leaf_to_json(v, b, errstr, errlen);
	case WARREN_ARRAY:
		return array_to_json(v, b, errstr, errlen);
	case WARREN_MAP:
		return map_to_json(v, b, errstr, errlen);
	}
	return WARREN_OK;
}

warren_err warren_value_to_json(const warren_value *v, char **out, char *errstr, size_t errlen)
{
	struct jbuf b = {0};
	warren_err err;

	if (out == NULL) {
		errstr_set(errstr, errlen, "no output");
		return WARREN_ERR_INVALID;
	}
	*out = NULL;
	err = to_json(v, &b, errstr, errlen);
	if (err == WARREN_OK && b.oom) {
		errstr_set(errstr, errlen, "out of memory");
		err = WARREN_ERR_NOMEM;
	}
	if (err != WARREN_OK) {
		free(b.p);
		return err;
	}
	*out = b.p;
	return WARREN_OK;
}
