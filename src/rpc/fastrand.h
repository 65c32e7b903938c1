/* fastrand.h: random bytes for ids (correlation ids, message ids, trace and
 * span ids) without a system call each. Not for keys or nonces of any
 * cryptographic scheme. */
#ifndef WARREN_FASTRAND_H
#define WARREN_FASTRAND_H

#include <stddef.h>

/* Fills out with len unpredictable bytes. Thread-safe, lock-free; needs
 * sodium_init first (engine_global_init). */
void fastrand_buf(void *out, size_t len);

#endif
