/* retry.h: when and where a request failing transiently waits before its
 * next attempt. The waiting happens in the broker: per-message TTL in one
 * of the fixed delay tiers of wire.h (rpc.delay.250ms ... rpc.delay.32s,
 * in rabbitmq/definitions.json), each a fanout exchange and a quorum queue
 * that dead-letters expired messages back to the rpc exchange under their
 * own routing key. */
#ifndef WARREN_RETRY_H
#define WARREN_RETRY_H

#include <stdint.h>

#include "wire.h"

/* The wait after the attempt-th attempt failed (attempt >= 1): base doubled
 * attempt-1 times (capped at the largest tier), plus jitter from 0 up to
 * the same again, taken from rnd. */
int64_t retry_delay_ms(int64_t base_ms, int attempt, uint32_t rnd);

/* The tier a wait of ms goes to: the largest not above it (the smallest
 * for anything shorter), so that waits in one tier differ by less than a
 * factor of two and none waits long behind another. */
const struct wire_delay_tier *retry_tier_for(int64_t ms);

#endif
