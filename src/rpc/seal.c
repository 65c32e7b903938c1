/* seal.c: the key a caller and a service share, and bodies sealed with it
 * (see seal.h for the construction). */
#include "seal.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

_Static_assert(SEAL_OVERHEAD == crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES,
               "seal.h: SEAL_OVERHEAD");

int seal_pair_key(enum sign_scheme scheme, const struct sign_key *secret,
                  const struct sign_key *peer, unsigned char key[SEAL_KEY_BYTES])
{
	static const char context[] = "warren-seal-v1";
	unsigned char x_sk[crypto_box_SECRETKEYBYTES], x_pk[crypto_box_PUBLICKEYBYTES];
	int rc;

	if (scheme == SIGN_MAC) {
		return crypto_generichash(key, SEAL_KEY_BYTES, (const unsigned char *)context,
		                          sizeof(context) - 1, secret->bytes, secret->len);
	}
	if (peer == NULL || peer->len != crypto_sign_PUBLICKEYBYTES ||
	    secret->len != crypto_sign_SECRETKEYBYTES ||
	    crypto_sign_ed25519_pk_to_curve25519(x_pk, peer->bytes) != 0 ||
	    crypto_sign_ed25519_sk_to_curve25519(x_sk, secret->bytes) != 0) {
		return -1;
	}
	rc = crypto_box_beforenm(key, x_pk, x_sk);
	sodium_memzero(x_sk, sizeof(x_sk));
	return rc == 0 ? 0 : -1;
}

int seal_body(const unsigned char key[SEAL_KEY_BYTES], const void *plain, size_t len, void **out,
              size_t *outlen)
{
	unsigned char *p = malloc(len + SEAL_OVERHEAD);

	*out = NULL;
	if (p == NULL) {
		return -1;
	}
	randombytes_buf(p, crypto_secretbox_NONCEBYTES);
	crypto_secretbox_easy(p + crypto_secretbox_NONCEBYTES, plain, len, p, key);
	*out = p;
	*outlen = len + SEAL_OVERHEAD;
	return 0;
}

int seal_open(const unsigned char key[SEAL_KEY_BYTES], const void *sealed, size_t len, void **out,
              size_t *outlen)
{
	const unsigned char *s = sealed;
	unsigned char *p;

	*out = NULL;
	if (len < SEAL_OVERHEAD) {
		return -1;
	}
	/* One byte more, so that an empty body is not malloc(0). */
	p = malloc(len - SEAL_OVERHEAD + 1);
	if (p == NULL) {
		return -1;
	}
	if (crypto_secretbox_open_easy(p, s + crypto_secretbox_NONCEBYTES,
	                               len - crypto_secretbox_NONCEBYTES, s, key) != 0) {
		free(p);
		return -1;
	}
	*out = p;
	*outlen = len - SEAL_OVERHEAD;
	return 0;
}
