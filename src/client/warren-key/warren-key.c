/* warren-key: the keys of signed messages (security.* in warren.conf(5)).
 *
 *   warren-key generate mac|ed25519 ID DIR
 *       writes DIR/ID.secret (mode 0600: this program's security.key_file)
 *       and DIR/ID.key (what peers put in their security.keyring: the public
 *       key for ed25519, mode 0644; the shared secret itself for mac, 0600)
 *   warren-key public SECRET_FILE
 *       prints the public key of an ed25519 secret key file
 *
 * Exit status, from exitcodes.h: 0 done, 1 a file could not be written or
 * read, 2 usage, 6 internal (libsodium failed to initialise). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "exitcodes.h"
#include "sign.h"

#define PROG "warren-key"
#define USAGE                                                                                      \
	"usage: " PROG " generate mac|ed25519 ID DIR\n"                                            \
	"       " PROG " public SECRET_FILE\n"                                                     \
	"       " PROG " -h | -V\n"

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
		fprintf(stderr, PROG ": ID must be 1 to %d characters without '/'\n",
		        SIGN_KEY_ID_MAX);
		return EXITCODE_USAGE;
	}
	snprintf(secret_path, sizeof(secret_path), "%s/%s.secret", dir, id);
	snprintf(key_path, sizeof(key_path), "%s/%s.key", dir, id);
	if (strcmp(scheme, "mac") == 0) {
		crypto_auth_keygen(sk);
		rc = write_key(secret_path, sk, crypto_auth_KEYBYTES, 0600) != 0 ||
		             write_key(key_path, sk, crypto_auth_KEYBYTES, 0600) != 0
		         ? EXITCODE_FAILED
		         : EXITCODE_OK;
	} else if (strcmp(scheme, "ed25519") == 0) {
		crypto_sign_keypair(pk, sk);
		rc = write_key(secret_path, sk, sizeof(sk), 0600) != 0 ||
		             write_key(key_path, pk, sizeof(pk), 0644) != 0
		         ? EXITCODE_FAILED
		         : EXITCODE_OK;
	} else {
		fprintf(stderr, PROG ": unknown scheme \"%s\" (mac or ed25519)\n", scheme);
		return EXITCODE_USAGE;
	}
	sodium_memzero(sk, sizeof(sk));
	if (rc == EXITCODE_OK) {
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
		return EXITCODE_FAILED;
	}
	crypto_sign_ed25519_sk_to_pk(pk, k.bytes);
	sodium_memzero(&k, sizeof(k));
	sign_to_hex(pk, sizeof(pk), hex);
	printf("%s\n", hex);
	return EXITCODE_OK;
}

/* -h, -V, or the error for any other option; EXITCODE_OK when arg is none
 * of them (a command). */
static int take_option(const char *arg)
{
	if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
		printf(USAGE);
		exit(EXITCODE_OK);
	}
	if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
		printf(PROG " %s\n", WARREN_VERSION);
		exit(EXITCODE_OK);
	}
	if (arg[0] == '-') {
		fprintf(stderr, PROG ": unknown option %.*s\n" USAGE, (int)strcspn(arg, "="), arg);
		return EXITCODE_USAGE;
	}
	return EXITCODE_OK;
}

int main(int argc, char **argv)
{
	int status = argc > 1 ? take_option(argv[1]) : EXITCODE_OK;

	if (status != EXITCODE_OK) {
		return status;
	}
	if (sodium_init() < 0) {
		fprintf(stderr, PROG ": libsodium failed to initialise\n");
		return EXITCODE_INTERNAL;
	}
	if (argc == 5 && strcmp(argv[1], "generate") == 0) {
		return generate(argv[2], argv[3], argv[4]);
	}
	if (argc == 3 && strcmp(argv[1], "public") == 0) {
		return show_public(argv[2]);
	}
	fprintf(stderr, USAGE);
	return EXITCODE_USAGE;
}
