/* fastrand.c: the ChaCha20 keystream under a key drawn once from the system
 * (randombytes_buf, re-drawn in a forked child), with a fresh nonce from an
 * atomic counter for every request: as unpredictable as the system's
 * generator while the key stays in this process, at about a tenth of the
 * cost of the getrandom() call libsodium makes for each randombytes_buf
 * (four per call made: correlation id, message id, trace and span ids). */
#include "fastrand.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

static unsigned char key[crypto_stream_chacha20_KEYBYTES];
static atomic_uint_fast64_t counter;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* A forked child must not repeat its parent's stream. */
static void rekey(void)
{
	randombytes_buf(key, sizeof(key));
}

static void init(void)
{
	rekey();
	pthread_atfork(NULL, NULL, rekey);
}

void fastrand_buf(void *out, size_t len)
{
	unsigned char nonce[crypto_stream_chacha20_NONCEBYTES] = {0};
	uint64_t n;

	pthread_once(&once, init);
	n = atomic_fetch_add(&counter, 1);
	memcpy(nonce, &n, sizeof(n) < sizeof(nonce) ? sizeof(n) : sizeof(nonce));
	crypto_stream_chacha20(out, len, nonce, key);
}
