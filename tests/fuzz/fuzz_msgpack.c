/* fuzz_msgpack.c: codec_msgpack_decode on arbitrary bytes, as a worker does
 * on a request body. What it accepts must survive a msgpack round trip and,
 * when it has a JSON form, a JSON round trip; when it has one, writing it as
 * JSON must succeed. */
#include <stdlib.h>

#include "codec.h"
#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	warren_value *v = NULL;
	char why[256] = "";
	char *text = NULL;

	if (codec_msgpack_decode(data, size, &v, why, sizeof(why)) != WARREN_OK) {
		ORACLE_CHECK(v == NULL, "a failed decode left a value behind");
		ORACLE_CHECK(why[0] != '\0', "a failed decode did not say why");
		return 0;
	}
	oracle_msgpack_round_trip(v);
	if (oracle_has_json_form(v)) {
		oracle_json_round_trip(v);
	} else {
		ORACLE_CHECK(warren_value_to_json(v, &text, why, sizeof(why)) == WARREN_ERR_INVALID,
		             "a value without a JSON form was written as JSON");
		ORACLE_CHECK(text == NULL, "a failed JSON write left text behind");
	}
	warren_value_free(v);
	return 0;
}
