/* warren-key: the keys of signed messages (security.* in warren.conf(5)).
 *
 *   warren-key generate mac|ed25519 ID DIR
 *       writes DIR/ID.secret (mode 0600: this program's security.key_file)
 *       and DIR/ID.key (what peers put in their security.keyring: the public
 *       key for ed25519, mode 0644; the shared secret itself for mac, 0600)
 *   warren-key public SECRET_FILE
 *       prints the public key of an ed25519 secret key file
 *
 * Exit status: 0 done, 1 failed, 2 usage. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "sign.h"

#define PROG "warren-key"
#define USAGE                                                                                 \
	"usage: " PROG " generate mac|ed25519 ID DIR\n"                                           \
	"       " PROG " public SECRET_FILE\n"

/* Writes hex of len bytes as one line to path, created with mode (never
 * over an existing file). */
static int write_key(const char *path, const unsigned char *key, size_t len, mode_t mode)
{
	char hex[2 * 64 + 2];
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	ssize_t n;

	if (fd < 0) {
		fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
		return -1;
	}
	sign_to_hex(key, len, hex);
	strcat(hex, "\n");
	n = write(fd, hex, strlen(hex));
	sodium_memzero(hex, sizeof(hex));
	if (n != (ssize_t)(len * 2 + 1) || fchmod(fd, mode) != 0 || close(fd) != 0) {
		fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int generate(const char *scheme, const char *id, const char *dir)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
	char secret_path[4096], key_path[4096];
	int rc;

	if (id[0] == '\0' || strlen(id) > SIGN_KEY_ID_MAX || strchr(id, '/') != NULL) {
		fprintf(stderr, PROG ": ID must be 1 to %d characters without '/'\n", SIGN_KEY_ID_MAX);
		return 2;
	}
	snprintf(secret_path, sizeof(secret_path), "%s/%s.secret", dir, id);
	snprintf(key_path, sizeof(key_path), "%s/%s.key", dir, id);
	if (strcmp(scheme, "mac") == 0) {
		crypto_auth_keygen(sk);
		rc = write_key(secret_path, sk, crypto_auth_KEYBYTES, 0600) != 0 ||
		             write_key(key_path, sk, crypto_auth_KEYBYTES, 0600) != 0
		         ? 1
		         : 0;
	} else if (strcmp(scheme, "ed25519") == 0) {
		crypto_sign_keypair(pk, sk);
		rc = write_key(secret_path, sk, sizeof(sk), 0600) != 0 ||
		             write_key(key_path, pk, sizeof(pk), 0644) != 0
		         ? 1
		         : 0;
	} else {
		fprintf(stderr, PROG ": unknown scheme \"%s\" (mac or ed25519)\n", scheme);
		return 2;
	}
	sodium_memzero(sk, sizeof(sk));
	if (rc == 0) {
		printf("%s\n%s\n", secret_path, key_path);
	}
	return rc;
}

static int show_public(const char *path)
{
	struct sign_key k;
	char why[512], hex[2 * crypto_sign_PUBLICKEYBYTES + 1];
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];

	if (sign_load_secret(SIGN_ED25519, "key", path, &k, why, sizeof(why)) != 0) {
		fprintf(stderr, PROG ": %s\n", why);
		return 1;
	}
	crypto_sign_ed25519_sk_to_pk(pk, k.bytes);
	sodium_memzero(&k, sizeof(k));
	sign_to_hex(pk, sizeof(pk), hex);
	printf("%s\n", hex);
	return 0;
}

int main(int argc, char **argv)
{
	if (sodium_init() < 0) {
		fprintf(stderr, PROG ": libsodium failed to initialise\n");
		return 1;
	}
	if (argc == 5 && strcmp(argv[1], "generate") == 0) {
		return generate(argv[2], argv[3], argv[4]);
	}
	if (argc == 3 && strcmp(argv[1], "public") == 0) {
		return show_public(argv[2]);
	}
	if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		printf(USAGE);
		return 0;
	}
	fprintf(stderr, USAGE);
	return 2;
}
