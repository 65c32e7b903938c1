/* test_seal.c: the key a caller and a service share (both schemes), and
 * sealed bodies: what is sealed opens intact, and only with that key; a
 * changed byte, a cut body or another pair's key does not open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "seal.h"

static const char plain[] = "{\"email\":\"ada@example.org\"}";

/* Ed25519: the caller's secret with the service's public key gives the
 * key the service's secret gives with the caller's public key; a third
 * party's gives another. */
static void test_ed25519_pair_keys_agree(void **state)
{
	struct sign_key app_sk = {.len = 64}, app_pk = {.len = 32}, svc_sk = {.len = 64},
	                svc_pk = {.len = 32}, eve_sk = {.len = 64}, eve_pk = {.len = 32};
	unsigned char a[SEAL_KEY_BYTES], b[SEAL_KEY_BYTES], e[SEAL_KEY_BYTES];

	crypto_sign_keypair(app_pk.bytes, app_sk.bytes);
	crypto_sign_keypair(svc_pk.bytes, svc_sk.bytes);
	crypto_sign_keypair(eve_pk.bytes, eve_sk.bytes);
	assert_int_equal(seal_pair_key(SIGN_ED25519, &app_sk, &svc_pk, a), 0);
	assert_int_equal(seal_pair_key(SIGN_ED25519, &svc_sk, &app_pk, b), 0);
	assert_memory_equal(a, b, SEAL_KEY_BYTES);
	assert_int_equal(seal_pair_key(SIGN_ED25519, &eve_sk, &svc_pk, e), 0);
	assert_memory_not_equal(a, e, SEAL_KEY_BYTES);
	/* Not a public key: the size is wrong. */
	app_pk.len = 31;
	assert_int_equal(seal_pair_key(SIGN_ED25519, &svc_sk, &app_pk, b), -1);
	assert_int_equal(seal_pair_key(SIGN_ED25519, &svc_sk, NULL, b), -1);
}

/* mac: derived from the shared secret, never the secret itself (which
 * signs), and the same for both sides. */
static void test_mac_pair_key_is_derived(void **state)
{
	struct sign_key k = {.len = 32};
	unsigned char a[SEAL_KEY_BYTES], b[SEAL_KEY_BYTES];

	crypto_auth_keygen(k.bytes);
	assert_int_equal(seal_pair_key(SIGN_MAC, &k, NULL, a), 0);
	assert_int_equal(seal_pair_key(SIGN_MAC, &k, NULL, b), 0);
	assert_memory_equal(a, b, SEAL_KEY_BYTES);
	assert_memory_not_equal(a, k.bytes, SEAL_KEY_BYTES);
}

static void test_a_sealed_body_opens_only_with_its_key(void **state)
{
	unsigned char key[SEAL_KEY_BYTES], other[SEAL_KEY_BYTES];
	void *sealed = NULL, *again = NULL, *opened = NULL;
	size_t len = 0, len2 = 0, olen = 0;

	crypto_secretbox_keygen(key);
	crypto_secretbox_keygen(other);
	assert_int_equal(seal_body(key, plain, strlen(plain), &sealed, &len), 0);
	assert_int_equal(len, strlen(plain) + SEAL_OVERHEAD);
	assert_null(memmem(sealed, len, "ada@example.org", 15));
	/* A fresh nonce each time: the same body never seals the same way. */
	assert_int_equal(seal_body(key, plain, strlen(plain), &again, &len2), 0);
	assert_memory_not_equal(sealed, again, len);

	assert_int_equal(seal_open(key, sealed, len, &opened, &olen), 0);
	assert_int_equal(olen, strlen(plain));
	assert_memory_equal(opened, plain, olen);
	free(opened);

	assert_int_equal(seal_open(other, sealed, len, &opened, &olen), -1);
	assert_null(opened);
	for (size_t i = 0; i < len; i++) {
		((unsigned char *)sealed)[i] ^= 0x01;
		assert_int_equal(seal_open(key, sealed, len, &opened, &olen), -1);
		((unsigned char *)sealed)[i] ^= 0x01;
	}
	assert_int_equal(seal_open(key, sealed, len - 1, &opened, &olen), -1);
	assert_int_equal(seal_open(key, sealed, SEAL_OVERHEAD - 1, &opened, &olen), -1);
	assert_null(opened);
	free(sealed);
	free(again);
}

static void test_an_empty_body_seals_and_opens(void **state)
{
	unsigned char key[SEAL_KEY_BYTES];
	void *sealed = NULL, *opened = NULL;
	size_t len = 0, olen = 1;

	crypto_secretbox_keygen(key);
	assert_int_equal(seal_body(key, "", 0, &sealed, &len), 0);
	assert_int_equal(len, SEAL_OVERHEAD);
	assert_int_equal(seal_open(key, sealed, len, &opened, &olen), 0);
	assert_non_null(opened);
	assert_int_equal(olen, 0);
	free(opened);
	free(sealed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ed25519_pair_keys_agree),
	    cmocka_unit_test(test_mac_pair_key_is_derived),
	    cmocka_unit_test(test_a_sealed_body_opens_only_with_its_key),
	    cmocka_unit_test(test_an_empty_body_seals_and_opens),
	};

	if (sodium_init() < 0) {
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
