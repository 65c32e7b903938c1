/* backoff.c: exponential back-off with jitter. */
#include "backoff.h"

int64_t backoff_ms(int64_t base_ms, int64_t cap_ms, int attempt, uint32_t rnd)
{
	int64_t d = base_ms > 0 ? base_ms : 1;

	for (int i = 1; i < attempt && d < cap_ms; i++) {
		d *= 2;
	}
	if (d > cap_ms) {
		d = cap_ms;
	}
	return d + (int64_t)(rnd % (uint64_t)d);
}
