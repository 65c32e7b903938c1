/* breaker.h: the circuit breaker's state (breaker.c).
 *
 * Lock rule: threshold, probe_ms, probe and probe_arg are set before the
 * worker starts and only read after. consecutive, probe_queued and
 * next_probe are under the worker's mu, by design: an outcome that opens
 * the breaker sets them and stats.breaker_open/_trips/_error (metrics.h)
 * in one step, so that warren_worker_get_stats and the tick never see one
 * without the other; a lock of the breaker's own would have to be taken
 * with mu anyway. Handler threads record outcomes and probes
 * (breaker_record, breaker_probed); the I/O thread reads them in its tick
 * (breaker_tick). paused is the I/O thread's alone. No other lock is
 * taken while mu is held here. */
#ifndef WARREN_BREAKER_H
#define WARREN_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "warren.h"

struct breaker {
	int threshold;         /* worker.breaker_threshold; 0: never opens */
	int64_t probe_ms;      /* worker.breaker_probe */
	warren_probe_fn probe; /* NULL: the next request is the probe */
	void *probe_arg;
	int consecutive;    /* under mu: transient failures in a row */
	bool probe_queued;  /* under mu: the probe is queued or running */
	int64_t next_probe; /* under mu: engine_now() ms of the next probe */
	bool paused;        /* I/O thread: the consumers are cancelled by the breaker */
};

#endif
