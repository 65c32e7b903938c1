/* codec_msgpack.c: msgpack bodies to and from warren_value. Decoding is a
 * single bounds-checked pass written here (msgpack-c 4.0's unpacker
 * allocates from declared lengths before reading them, see
 * shared/notes/dependencies.md 2.3); encoding uses msgpack-c's packer. */
#include "codec.h"
#include "utf8.h"
#include "value_int.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct reader {
	const uint8_t *p;
	size_t len, pos;
	char *errstr;
	size_t errlen;
	bool in_place; /* binary values point into p (codec_msgpack_decode_in_place) */
};

/* Records "at byte AT: ..." and returns WARREN_ERR_DECODE. */
static warren_err fail(struct reader *r, size_t at, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->errstr == NULL || r->errlen == 0) {
		return WARREN_ERR_DECODE;
	}
	n = snprintf(r->errstr, r->errlen, "at byte %zu: ", at);
	if (n >= 0 && (size_t)n < r->errlen) {
		va_start(ap, fmt);
		vsnprintf(r->errstr + n, r->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return WARREN_ERR_DECODE;
}

static size_t remaining(const struct reader *r)
{
	return r->len - r->pos;
}

/* A value just built: WARREN_OK, or WARREN_ERR_NOMEM when building it failed. */
static warren_err made(warren_value *v, warren_value **out)
{
	*out = v;
	return v != NULL ? WARREN_OK : WARREN_ERR_NOMEM;
}

/* Reads an n-byte big-endian unsigned number (n <= 8). */
static bool read_be(struct reader *r, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (remaining(r) < n) {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		v = v << 8 | r->p[r->pos + i];
	}
	r->pos += n;
	*out = v;
	return true;
}

static const char *format_kind(uint8_t b)
{
	if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) {
		return "integer";
	}
	if (b <= 0x8f || b == 0xde || b == 0xdf) {
		return "map";
	}
	if (b <= 0x9f || b == 0xdc || b == 0xdd) {
		return "array";
	}
	if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) {
		return "string";
	}
	switch (b) {
	case 0xc0:
		return "nil";
	case 0xc2:
	case 0xc3:
		return "boolean";
	case 0xc4:
	case 0xc5:
	case 0xc6:
		return "binary";
	case 0xca:
	case 0xcb:
		return "float";
	default:
		return "ext";
	}
}

static warren_err decode_value(struct reader *r, int depth, warren_value **out);

/* The length that follows a header byte: n bytes big-endian, or fixed. */
static warren_err read_len(struct reader *r, size_t at, size_t n, uint64_t *out)
{
	if (!read_be(r, n, out)) {
		return fail(r, r->len, "unexpected end of data in the header at byte %zu", at);
	}
	return WARREN_OK;
}

static warren_err decode_bytes(struct reader *r, size_t at, warren_type t, uint64_t n,
                               warren_value **out)
{
	const char *what = t == WARREN_STR ? "string" : "binary";

	if (n > remaining(r)) {
		return fail(r, at, "%s of %llu bytes but only %zu remain", what,
		            (unsigned long long)n, remaining(r));
	}
	if (t == WARREN_STR && !utf8_valid(r->p + r->pos, n)) {
		return fail(r, at, "string is not valid UTF-8");
	}
	if (t == WARREN_STR) {
		*out = warren_strn((const char *)r->p + r->pos, n);
	} else if (r->in_place) {
		*out = value_bin_borrowed(r->p + r->pos, n);
	} else {
		*out = warren_bin(r->p + r->pos, n);
	}
	r->pos += n;
	return *out != NULL ? WARREN_OK : WARREN_ERR_NOMEM;
}

static warren_err decode_array(struct reader *r, size_t at, int depth, uint64_t n,
                               warren_value **out)
{
	warren_value *a;
	warren_err err = WARREN_OK;

	/* Every item takes at least one byte. */
	if (n > remaining(r)) {
		return fail(r, at, "array of %llu items but only %zu bytes remain",
		            (unsigned long long)n, remaining(r));
	}
	a = value_container(WARREN_ARRAY, n);
	if (a == NULL) {
		return WARREN_ERR_NOMEM;
	}
	for (uint64_t i = 0; i < n && err == WARREN_OK; i++) {
		warren_value *item = NULL;
		err = decode_value(r, depth + 1, &item);
		if (err == WARREN_OK) {
			err = warren_array_push(a, item);
		}
	}
	if (err != WARREN_OK) {
		warren_value_free(a);
		return err;
	}
	*out = a;
	return WARREN_OK;
}

/* A key quoted for an error message when it is short printable ASCII. */
static const char *quoted_key(const warren_value *k, char *buf, size_t len)
{
	for (size_t i = 0; i < k->u.s.len; i++) {
		if (k->u.s.p[i] < 0x20 || k->u.s.p[i] > 0x7e) {
			return "";
		}
	}
	if (k->u.s.len > 40) {
		return "";
	}
	snprintf(buf, len, " \"%s\"", k->u.s.p);
	return buf;
}

/* One key (a string without NUL, not seen before) and its value into m. */
static warren_err decode_entry(struct reader *r, int depth, warren_value *m)
{
	size_t key_at = r->pos;
	warren_value *key = NULL, *val = NULL;
	char quoted[48];
	warren_err err;

	if (remaining(r) > 0 && strcmp(format_kind(r->p[r->pos]), "string") != 0) {
		return fail(r, key_at, "map key is %s, expected string", format_kind(r->p[r->pos]));
	}
	err = decode_value(r, depth + 1, &key);
	if (err == WARREN_OK && memchr(key->u.s.p, '\0', key->u.s.len) != NULL) {
		err = fail(r, key_at, "map key contains a NUL byte");
	}
	if (err == WARREN_OK) {
		err = decode_value(r, depth + 1, &val);
	}
	if (err == WARREN_OK) {
		err = value_map_add(m, key->u.s.p, key->u.s.len, val, false);
		if (err == WARREN_ERR_INVALID) {
			err = fail(r, key_at, "duplicate map key%s",
			           quoted_key(key, quoted, sizeof(quoted)));
		}
	}
	warren_value_free(key);
	return err;
}

static warren_err decode_map(struct reader *r, size_t at, int depth, uint64_t n, warren_value **out)
{
	warren_value *m;
	warren_err err = WARREN_OK;

	/* Every entry takes at least two bytes. */
	if (n > remaining(r) / 2) {
		return fail(r, at, "map of %llu entries but only %zu bytes remain",
		            (unsigned long long)n, remaining(r));
	}
	m = value_container(WARREN_MAP, n);
	if (m == NULL) {
		return WARREN_ERR_NOMEM;
	}
	for (uint64_t i = 0; i < n && err == WARREN_OK; i++) {
		err = decode_entry(r, depth, m);
	}
	if (err != WARREN_OK) {
		warren_value_free(m);
		return err;
	}
	*out = m;
	return WARREN_OK;
}

static warren_err decode_ext(struct reader *r, size_t at, uint64_t n)
{
	if (remaining(r) < 1) {
		return fail(r, r->len, "unexpected end of data in the header at byte %zu", at);
	}
	return fail(r, at, "ext type %d is not supported", (int)(int8_t)r->p[r->pos]);
}

static warren_err decode_number(struct reader *r, size_t at, uint8_t b, warren_value **out)
{
	static const size_t width[] = {1, 2, 4, 8}; /* 0xcc..0xcf, 0xd0..0xd3 */
	uint64_t u;

	if (b == 0xca || b == 0xcb) {
		if (!read_be(r, b == 0xca ? 4 : 8, &u)) {
			return fail(r, r->len, "unexpected end of data in the float at byte %zu",
			            at);
		}
		if (b == 0xca) {
			uint32_t bits = (uint32_t)u;
			float f;
			memcpy(&f, &bits, sizeof(f));
			return made(warren_float(f), out);
		}
		double d;
		memcpy(&d, &u, sizeof(d));
		return made(warren_float(d), out);
	}
	size_t w = width[(b - 0xcc) & 3];
	if (!read_be(r, w, &u)) {
		return fail(r, r->len, "unexpected end of data in the integer at byte %zu", at);
	}
	if (b <= 0xcf) {
		if (u > INT64_MAX) {
			return fail(r, at, "integer %llu is out of the int64 range",
			            (unsigned long long)u);
		}
		return made(warren_int((int64_t)u), out);
	}
	/* Sign-extend the w-byte two's complement value. */
	int64_t i = w == 8 ? (int64_t)u
	                   : (int64_t)(u ^ (1ULL << (w * 8 - 1))) - (int64_t)(1ULL << (w * 8 - 1));
	return made(warren_int(i), out);
}

/* Whether header byte b starts an array or a map. */
static bool is_container(uint8_t b)
{
	return (b >= 0x80 && b <= 0x9f) || (b >= 0xdc && b <= 0xdf);
}

/* fixmap, fixarray and fixstr: the length is in the header byte. */
static warren_err decode_fix(struct reader *r, size_t at, int depth, uint8_t b, warren_value **out)
{
	if (b <= 0x8f) {
		return decode_map(r, at, depth, b & 0x0f, out);
	}
	if (b <= 0x9f) {
		return decode_array(r, at, depth, b & 0x0f, out);
	}
	return decode_bytes(r, at, WARREN_STR, b & 0x1f, out);
}

/* The width of the length that follows header byte b (bin, ext, str,
 * array, map 8/16/32). */
static size_t len_width(uint8_t b)
{
	switch (b) {
	case 0xc4:
	case 0xc7:
	case 0xd9:
		return 1;
	case 0xc5:
	case 0xc8:
	case 0xda:
	case 0xdc:
	case 0xde:
		return 2;
	default: /* 0xc6, 0xc9, 0xdb, 0xdd, 0xdf */
		return 4;
	}
}

/* The formats whose length follows the header byte. */
static warren_err decode_sized(struct reader *r, size_t at, int depth, uint8_t b,
                               warren_value **out)
{
	uint64_t n = 0;
	warren_err err = read_len(r, at, len_width(b), &n);

	if (err != WARREN_OK) {
		return err;
	}
	if (b <= 0xc6) {
		return decode_bytes(r, at, WARREN_BIN, n, out);
	}
	if (b <= 0xc9) {
		return decode_ext(r, at, n);
	}
	if (b <= 0xdb) {
		return decode_bytes(r, at, WARREN_STR, n, out);
	}
	if (b <= 0xdd) {
		return decode_array(r, at, depth, n, out);
	}
	return decode_map(r, at, depth, n, out);
}

static warren_err decode_value(struct reader *r, int depth, warren_value **out)
{
	size_t at = r->pos;
	uint8_t b;

	if (remaining(r) == 0) {
		return fail(r, at, "unexpected end of data");
	}
	b = r->p[r->pos++];
	if (b <= 0x7f || b >= 0xe0) {
		return made(warren_int(b <= 0x7f ? b : (int64_t)(int8_t)b), out);
	}
	if (is_container(b) && depth >= CODEC_MAX_DEPTH) {
		return fail(r, at, "nested deeper than %d levels", CODEC_MAX_DEPTH);
	}
	if (b <= 0xbf) {
		return decode_fix(r, at, depth, b, out);
	}
	switch (b) {
	case 0xc0:
		return made(warren_nil(), out);
	case 0xc1:
		return fail(r, at, "byte 0xc1 is never used in msgpack");
	case 0xc2:
	case 0xc3:
		return made(warren_bool(b == 0xc3), out);
	case 0xd4:
	case 0xd5:
	case 0xd6:
	case 0xd7:
	case 0xd8:
		return decode_ext(r, at, (uint64_t)1 << (b - 0xd4));
	default:
		if (b >= 0xca && b <= 0xd3) {
			return decode_number(r, at, b, out);
		}
		return decode_sized(r, at, depth, b, out);
	}
}

static warren_err decode(const void *buf, size_t len, bool in_place, warren_value **out,
                         char *errstr, size_t errlen)
{
	struct reader r = {
	    .p = buf, .len = len, .errstr = errstr, .errlen = errlen, .in_place = in_place};
	warren_value *v = NULL;
	warren_err err;

	*out = NULL;
	if (buf == NULL && len > 0) {
		return fail(&r, 0, "no data");
	}
	err = decode_value(&r, 0, &v);
	if (err != WARREN_OK) {
		return err;
	}
	if (r.pos != len) {
		warren_value_free(v);
		return fail(&r, r.pos, "%zu trailing bytes after the value", len - r.pos);
	}
	*out = v;
	return WARREN_OK;
}

/* ---------------------------------------------------------------- encoding */
warren_err codec_msgpack_decode(const void *buf, size_t len, warren_value **out, char *errstr,
                                size_t errlen)
{
	return decode(buf, len, false, out, errstr, errlen);
}

warren_err codec_msgpack_decode_in_place(const void *buf, size_t len, warren_value **out,
                                         char *errstr, size_t errlen)
{
	return decode(buf, len, true, out, errstr, errlen);
}

/* 0, -1 when the buffer cannot grow, ENCODE_TOO_DEEP. */
#define ENCODE_TOO_DEEP (-2)

static int encode_value(msgpack_packer *pk, const warren_value *v, int depth)
{
	int rc = 0;

	switch (warren_value_type(v)) {
	case WARREN_NIL:
		return msgpack_pack_nil(pk);
	case WARREN_BOOL:
		return v->u.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
	case WARREN_INT:
		return msgpack_pack_int64(pk, v->u.i);
	case WARREN_FLOAT:
		return msgpack_pack_double(pk, v->u.d);
	case WARREN_STR:
		return msgpack_pack_str_with_body(pk, v->u.s.p, v->u.s.len);
	case WARREN_BIN:
		return msgpack_pack_bin_with_body(pk, v->u.s.p, v->u.s.len);
	case WARREN_ARRAY:
		if (depth >= CODEC_MAX_DEPTH) {
			return ENCODE_TOO_DEEP;
		}
		rc = msgpack_pack_array(pk, v->u.a.len);
		for (size_t i = 0; i < v->u.a.len && rc == 0; i++) {
			rc = encode_value(pk, v->u.a.items[i], depth + 1);
		}
		return rc;
	case WARREN_MAP:
		if (depth >= CODEC_MAX_DEPTH) {
			return ENCODE_TOO_DEEP;
		}
		rc = msgpack_pack_map(pk, v->u.m.len);
		for (size_t i = 0; i < v->u.m.len && rc == 0; i++) {
			rc = msgpack_pack_str_with_body(pk, v->u.m.e[i].key, v->u.m.e[i].klen);
			if (rc == 0) {
				rc = encode_value(pk, v->u.m.e[i].val, depth + 1);
			}
		}
		return rc;
	}
	return -1;
}

/* The packer's writers for the two passes of codec_msgpack_encode: the
 * first only counts, the second fills a buffer of exactly that size. */
struct sized {
	char *p;
	size_t len, cap;
};

static int count_write(void *data, const char *buf, size_t len)
{
	(void)buf;
	((struct sized *)data)->len += len;
	return 0;
}

static int fill_write(void *data, const char *buf, size_t len)
{
	struct sized *s = data;

	if (len > s->cap - s->len) {
		return -1; /* cannot happen: the same tree packs the same */
	}
	memcpy(s->p + s->len, buf, len);
	s->len += len;
	return 0;
}

/* Two passes of the same packer, the first counting bytes, so the body is
 * one allocation of its exact size: no growth by doubling (8 KiB per call
 * in flight for a 100-byte body, and for a 64 KiB body a 128 KiB buffer
 * that glibc maps and unmaps on every call, each unmap a TLB shootdown
 * across the process's threads), no copy, nothing to give back. */
warren_err codec_msgpack_encode(const warren_value *v, void **out, size_t *outlen)
{
	return codec_msgpack_encode_alloc(v, NULL, NULL, out, outlen);
}

warren_err codec_msgpack_encode_alloc(const warren_value *v, void *(*alloc)(size_t n, void *arg),
                                      void *arg, void **out, size_t *outlen)
{
	struct sized count = {0}, fill = {0};
	msgpack_packer pk;
	int rc;

	*out = NULL;
	*outlen = 0;
	msgpack_packer_init(&pk, &count, count_write);
	rc = encode_value(&pk, v, 0);
	if (rc != 0) {
		/* A tree nested deeper than any decoder here would accept. */
		return rc == ENCODE_TOO_DEEP ? WARREN_ERR_INVALID : WARREN_ERR_NOMEM;
	}
	fill.cap = count.len;
	fill.p = alloc != NULL ? alloc(count.len > 0 ? count.len : 1, arg)
	                       : malloc(count.len > 0 ? count.len : 1);
	if (fill.p == NULL) {
		return WARREN_ERR_NOMEM;
	}
	msgpack_packer_init(&pk, &fill, fill_write);
	if (encode_value(&pk, v, 0) != 0 || fill.len != count.len) {
		free(fill.p);
		return WARREN_ERR_NOMEM;
	}
	*out = fill.p;
	*outlen = fill.len;
	return WARREN_OK;
}
