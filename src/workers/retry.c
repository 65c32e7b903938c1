/* retry.c: exponential back-off with jitter onto the broker's delay tiers. */
#include "retry.h"

#include "backoff.h"

const struct retry_tier retry_tiers[RETRY_TIERS] = {
    {250, "rpc.delay.250ms"}, {500, "rpc.delay.500ms"}, {1000, "rpc.delay.1s"},
    {2000, "rpc.delay.2s"},   {4000, "rpc.delay.4s"},   {8000, "rpc.delay.8s"},
    {16000, "rpc.delay.16s"}, {32000, "rpc.delay.32s"},
};

int64_t retry_delay_ms(int64_t base_ms, int attempt, uint32_t rnd)
{
	return backoff_ms(base_ms > 0 ? base_ms : retry_tiers[0].ms, retry_tiers[RETRY_TIERS - 1].ms,
	                  attempt, rnd);
}

const struct retry_tier *retry_tier_for(int64_t ms)
{
	const struct retry_tier *t = &retry_tiers[0];

	for (int i = 1; i < RETRY_TIERS && retry_tiers[i].ms <= ms; i++) {
		t = &retry_tiers[i];
	}
	return t;
}
