/* retry.c: exponential back-off with jitter onto the broker's delay tiers
 * (wire.h names them). */
#include "retry.h"

#include "backoff.h"

int64_t retry_delay_ms(int64_t base_ms, int attempt, uint32_t rnd)
{
	return backoff_ms(base_ms > 0 ? base_ms : wire_delay_tiers[0].ms,
	                  wire_delay_tiers[WIRE_DELAY_TIERS - 1].ms, attempt, rnd);
}

const struct wire_delay_tier *retry_tier_for(int64_t ms)
{
	const struct wire_delay_tier *t = &wire_delay_tiers[0];

	for (int i = 1; i < WIRE_DELAY_TIERS && wire_delay_tiers[i].ms <= ms; i++) {
		t = &wire_delay_tiers[i];
	}
	return t;
}
