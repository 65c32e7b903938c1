/* oracle.c: the checks the fuzz targets apply to what they decoded. A failed
 * check aborts, so libFuzzer saves the input that led to it. */
#include "oracle.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

void oracle_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("fuzz oracle: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

bool oracle_has_json_form(const warren_value *v)
{
	const char *key;
	const warren_value *item;
	double d;

	switch (warren_value_type(v)) {
	case WARREN_BIN:
		return false;
	case WARREN_FLOAT:
		return warren_value_get_float(v, &d) && isfinite(d);
	case WARREN_ARRAY:
		for (size_t i = 0; i < warren_value_len(v); i++) {
			if (!oracle_has_json_form(warren_array_at(v, i))) {
				return false;
			}
		}
		return true;
	case WARREN_MAP:
		for (size_t i = 0; warren_map_at(v, i, &key, &item); i++) {
			if (!oracle_has_json_form(item)) {
				return false;
			}
		}
		return true;
	default:
		return true;
	}
}

void oracle_msgpack_round_trip(const warren_value *v)
{
	void *buf = NULL;
	size_t len = 0;
	warren_value *back = NULL;
	char why[256] = "";
	warren_err err = codec_msgpack_encode(v, &buf, &len);

	ORACLE_CHECK(err == WARREN_OK, "msgpack encoding of a decoded value failed: %s",
	             warren_err_str(err));
	err = codec_msgpack_decode(buf, len, &back, why, sizeof(why));
	ORACLE_CHECK(err == WARREN_OK, "msgpack we encoded does not decode: %s", why);
	ORACLE_CHECK(warren_value_equal(v, back), "msgpack round trip changed the value");
	warren_value_free(back);
	free(buf);
}

void oracle_json_round_trip(const warren_value *v)
{
	char *text = NULL, *again = NULL;
	warren_value *back = NULL;
	char why[256] = "";
	warren_err err = warren_value_to_json(v, &text, why, sizeof(why));

	ORACLE_CHECK(err == WARREN_OK, "a value with a JSON form was not written: %s", why);
	err = warren_value_from_json(text, strlen(text), &back, why, sizeof(why));
	ORACLE_CHECK(err == WARREN_OK, "JSON we wrote does not read back: %s: %s", why, text);
	ORACLE_CHECK(warren_value_equal(v, back), "JSON round trip changed the value: %s", text);
	err = warren_value_to_json(back, &again, why, sizeof(why));
	ORACLE_CHECK(err == WARREN_OK, "a value read from JSON was not written back: %s", why);
	ORACLE_CHECK(strcmp(text, again) == 0, "JSON text is not a fixpoint: %s then %s", text,
	             again);
	warren_value_free(back);
	free(text);
	free(again);
}
