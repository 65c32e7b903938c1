/* oracle.h: what the fuzz targets share: libFuzzer's entry point, the way an
 * oracle fails (a message on stderr, then abort, which libFuzzer records as
 * a crash with this input), and the round trips a decoded value must
 * survive. */
#ifndef WARREN_FUZZ_ORACLE_H
#define WARREN_FUZZ_ORACLE_H

#include <stddef.h>
#include <stdint.h>

#include "warren.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prints "fuzz oracle: MESSAGE" and aborts. */
void oracle_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Aborts with the message when cond is false. */
#define ORACLE_CHECK(cond, ...)                                                                    \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			oracle_fail(__VA_ARGS__);                                                  \
		}                                                                                  \
	} while (0)

/* True when v holds nothing JSON cannot write: no binary, NaN or infinity. */
bool oracle_has_json_form(const warren_value *v);

/* v encoded as msgpack must decode to an equal value. */
void oracle_msgpack_round_trip(const warren_value *v);

/* v written as JSON must read back as an equal value, and writing that
 * again must give the same text. v must have a JSON form. */
void oracle_json_round_trip(const warren_value *v);

#endif
