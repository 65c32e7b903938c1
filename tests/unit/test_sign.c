/* test_sign.c: the canonical digest and both signature schemes: a signature
 * verifies, and changing any covered field (or the key) breaks it; key
 * files are refused when others may read them or they are not hex of the
 * right length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "sign.h"

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test-sign-%ld", (long)getpid());
	return sodium_init() < 0 || mkdir(dir, 0700) != 0 ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static struct sign_fields base(void)
{
	return (struct sign_fields){.key_id = "app",
	                            .method = "user.get",
	                            .message_id = "m1",
	                            .correlation_id = "c1",
	                            .reply_to = "amq.rabbitmq.reply-to",
	                            .deadline_ms = 1700000000000,
	                            .signed_at_ms = 1699999999000,
	                            .content_type = "application/json",
	                            .body = "{\"id\":1}",
	                            .body_len = 8};
}

/* Every covered field, changed one at a time, breaks the signature. */
static void check_scheme(enum sign_scheme scheme, const struct sign_key *secret,
                         const struct sign_key *verify)
{
	struct sign_fields f = base(), g;
	unsigned char sig[SIGN_MAX_SIG];
	size_t len = 0;

	sign_make(scheme, secret, &f, sig, &len);
	assert_true(len == (scheme == SIGN_MAC ? 32u : 64u));
	assert_true(sign_check(scheme, verify, &f, sig, len));
	for (int field = 0; field < 11; field++) {
		g = f;
		switch (field) {
		case 0: g.key_id = "other"; break;
		case 1: g.method = "user.delete"; break;
		case 2: g.message_id = "m2"; break;
		case 3: g.correlation_id = "c2"; break;
		case 4: g.reply_to = "rpc.reply.x"; break;
		case 5: g.deadline_ms++; break;
		case 6: g.signed_at_ms++; break;
		case 7: g.content_type = "application/msgpack"; break;
		case 8: g.body = "{\"id\":2}"; break;
		case 9: g.reply = true; break;
		case 10: g.content_encoding = "x-warren-sealed"; break;
		}
		assert_false(sign_check(scheme, verify, &g, sig, len));
	}
	/* Field boundaries are part of what is signed: "ab"+"c" is not "a"+"bc". */
	g = f;
	g.message_id = "m1c";
	g.correlation_id = "1";
	assert_false(sign_check(scheme, verify, &g, sig, len));
	sig[0] ^= 1;
	assert_false(sign_check(scheme, verify, &f, sig, len));
}

static void test_mac_signatures_cover_every_field(void **state)
{
	struct sign_key k = {.id = "app", .len = crypto_auth_KEYBYTES}, other = k;

	crypto_auth_keygen(k.bytes);
	check_scheme(SIGN_MAC, &k, &k);
	crypto_auth_keygen(other.bytes);
	{
		struct sign_fields f = base();
		unsigned char sig[SIGN_MAX_SIG];
		size_t len;
		sign_make(SIGN_MAC, &k, &f, sig, &len);
		assert_false(sign_check(SIGN_MAC, &other, &f, sig, len));
	}
}

static void test_ed25519_signatures_cover_every_field(void **state)
{
	struct sign_key sk = {.id = "app", .len = crypto_sign_SECRETKEYBYTES};
	struct sign_key pk = {.id = "app", .len = crypto_sign_PUBLICKEYBYTES};

	crypto_sign_keypair(pk.bytes, sk.bytes);
	check_scheme(SIGN_ED25519, &sk, &pk);
}

static void put(const char *name, const char *text, mode_t mode)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void test_key_files_are_checked(void **state)
{
	char path[128], why[300], want[300];
	struct sign_key k;
	const char *hex32 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

	put("good.secret", hex32, 0600);
	snprintf(path, sizeof(path), "%s/good.secret", dir);
	assert_int_equal(sign_load_secret(SIGN_MAC, "app", path, &k, why, sizeof(why)), 0);
	assert_int_equal(k.len, 32);
	assert_int_equal(k.bytes[31], 0x1f);

	put("open.secret", hex32, 0644);
	snprintf(path, sizeof(path), "%s/open.secret", dir);
	assert_int_equal(sign_load_secret(SIGN_MAC, "app", path, &k, why, sizeof(why)), -1);
	snprintf(want, sizeof(want),
	         "security.key_file: %s may be read by others (mode 0644): chmod 600 it", path);
	assert_string_equal(why, want);

	put("short.secret", "00ff\n", 0600);
	snprintf(path, sizeof(path), "%s/short.secret", dir);
	assert_int_equal(sign_load_secret(SIGN_MAC, "app", path, &k, why, sizeof(why)), -1);
	snprintf(want, sizeof(want),
	         "security.key_file: %s: expected 32 bytes in hex (64 characters)", path);
	assert_string_equal(why, want);

	/* An Ed25519 secret is 64 bytes: a mac-sized one is refused. */
	snprintf(path, sizeof(path), "%s/good.secret", dir);
	assert_int_equal(sign_load_secret(SIGN_ED25519, "app", path, &k, why, sizeof(why)), -1);
	snprintf(want, sizeof(want),
	         "security.key_file: %s: expected 64 bytes in hex (128 characters)", path);
	assert_string_equal(why, want);

	assert_int_equal(sign_load_secret(SIGN_MAC, "", path, &k, why, sizeof(why)), -1);
	assert_string_equal(why, "security.key_id: must be 1 to 64 characters");
}

static void test_a_keyring_holds_every_id_key_file(void **state)
{
	char ring[128], path[160], why[300] = "";
	struct sign_keyring kr;

	snprintf(ring, sizeof(ring), "%s/ring", dir);
	mkdir(ring, 0700);
	snprintf(path, sizeof(path), "ring/old.key");
	put(path, "aa00000000000000000000000000000000000000000000000000000000000000\n", 0644);
	put("ring/new.key", "bb00000000000000000000000000000000000000000000000000000000000000\n",
	    0644);
	put("ring/README", "not a key\n", 0644);
	assert_int_equal(sign_load_keyring(SIGN_MAC, ring, &kr, why, sizeof(why)), 0);
	assert_int_equal(kr.n, 2);
	assert_int_equal(sign_keyring_find(&kr, "old")->bytes[0], 0xaa);
	assert_int_equal(sign_keyring_find(&kr, "new")->bytes[0], 0xbb);
	assert_null(sign_keyring_find(&kr, "README"));
	sign_keyring_free(&kr);

	put("ring/bad.key", "zz\n", 0644);
	assert_int_equal(sign_load_keyring(SIGN_MAC, ring, &kr, why, sizeof(why)), -1);
	snprintf(path, sizeof(path),
	         "security.keyring: %s/bad.key: expected 32 bytes in hex (64 characters)", ring);
	assert_string_equal(why, path);
	assert_int_equal(sign_load_keyring(SIGN_MAC, "/nonexistent", &kr, why, sizeof(why)), -1);
	assert_string_equal(why, "security.keyring: /nonexistent: No such file or directory");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mac_signatures_cover_every_field),
		cmocka_unit_test(test_ed25519_signatures_cover_every_field),
		cmocka_unit_test(test_key_files_are_checked),
		cmocka_unit_test(test_a_keyring_holds_every_id_key_file),
	};

	return cmocka_run_group_tests_name("sign", tests, setup, teardown);
}
