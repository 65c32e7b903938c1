/* fuzz_json.c: warren_value_from_json on arbitrary text, as a worker does on
 * a JSON request body. What it accepts must be writable as JSON, read back
 * equal, and survive a msgpack round trip. */
#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	warren_value *v = NULL;
	char why[256] = "";

	if (warren_value_from_json((const char *)data, size, &v, why, sizeof(why)) != WARREN_OK) {
		ORACLE_CHECK(v == NULL, "a failed JSON read left a value behind");
		ORACLE_CHECK(why[0] != '\0', "a failed JSON read did not say why");
		return 0;
	}
	ORACLE_CHECK(oracle_has_json_form(v), "JSON text gave a value JSON cannot hold");
	oracle_json_round_trip(v);
	oracle_msgpack_round_trip(v);
	warren_value_free(v);
	return 0;
}
