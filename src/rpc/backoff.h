/* backoff.h: exponential back-off with jitter, for the worker's retries and
 * the caller's republishing. */
#ifndef WARREN_BACKOFF_H
#define WARREN_BACKOFF_H

#include <stdint.h>

/* The wait after the attempt-th attempt failed (attempt >= 1): base doubled
 * attempt-1 times, capped at cap, plus jitter from 0 up to the same again,
 * taken from rnd. So it lies in [d, 2d). */
int64_t backoff_ms(int64_t base_ms, int64_t cap_ms, int attempt, uint32_t rnd);

#endif
