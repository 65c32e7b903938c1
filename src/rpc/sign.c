/* sign.c: the canonical digest of a message, keyed MAC and Ed25519
 * signatures over it, and the key files. */
#include "sign.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "secret.h"

static void put_field(crypto_generichash_state *st, const void *p, size_t len)
{
	unsigned char n[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
	                      (unsigned char)(len >> 8), (unsigned char)len};

	crypto_generichash_update(st, n, 4);
	if (len > 0) {
		crypto_generichash_update(st, p, len);
	}
}

static void put_str(crypto_generichash_state *st, const char *s)
{
	put_field(st, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

static void put_num(crypto_generichash_state *st, int64_t v, bool present)
{
	char text[24] = "";

	if (present) {
		snprintf(text, sizeof(text), "%lld", (long long)v);
	}
	put_str(st, text);
}

static void digest(const struct sign_fields *f, unsigned char out[64])
{
	static const char magic[] = "warren-sig-v1";
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, 64);
	crypto_generichash_update(&st, (const unsigned char *)magic, sizeof(magic)); /* with NUL */
	put_str(&st, f->key_id);
	put_str(&st, f->reply ? "reply" : "request");
	if (f->reply) {
		put_num(&st, f->status, true);
	} else {
		put_str(&st, f->method);
	}
	put_str(&st, f->message_id);
	put_str(&st, f->correlation_id);
	put_str(&st, f->reply_to);
	put_num(&st, f->deadline_ms, f->deadline_ms > 0);
	put_num(&st, f->signed_at_ms, true);
	put_str(&st, f->content_type);
	put_str(&st, f->content_encoding);
	put_field(&st, f->body, f->body_len);
	crypto_generichash_final(&st, out, 64);
}

void sign_make(enum sign_scheme scheme, const struct sign_key *ours, const struct sign_fields *f,
               unsigned char *sig, size_t *siglen)
{
	unsigned char d[64];

	digest(f, d);
	if (scheme == SIGN_MAC) {
		crypto_auth(sig, d, sizeof(d), ours->bytes);
		*siglen = crypto_auth_BYTES;
	} else {
		unsigned long long n = 0;
		crypto_sign_detached(sig, &n, d, sizeof(d), ours->bytes);
		*siglen = (size_t)n;
	}
}

bool sign_check(enum sign_scheme scheme, const struct sign_key *key, const struct sign_fields *f,
                const unsigned char *sig, size_t siglen)
{
	unsigned char d[64];

	digest(f, d);
	if (scheme == SIGN_MAC) {
		return siglen == crypto_auth_BYTES && key->len == crypto_auth_KEYBYTES &&
		       crypto_auth_verify(sig, d, sizeof(d), key->bytes) == 0;
	}
	return siglen == crypto_sign_BYTES && key->len == crypto_sign_PUBLICKEYBYTES &&
	       crypto_sign_verify_detached(sig, d, sizeof(d), key->bytes) == 0;
}

int sign_from_hex(const char *hex, unsigned char *out, size_t cap, size_t *len)
{
	const char *end = NULL;

	return sodium_hex2bin(out, cap, hex, strlen(hex), NULL, len, &end) == 0 && *end == '\0'
	           ? 0
	           : -1;
}

void sign_to_hex(const unsigned char *in, size_t len, char *out)
{
	sodium_bin2hex(out, len * 2 + 1, in, len);
}

/* Reads the hex key of a file into k (want bytes long). */
static int read_key(const char *what, const char *path, size_t want, struct sign_key *k,
                    char *errstr, size_t errlen)
{
	char line[512];
	size_t len = 0;

	if (secret_read_line(what, path, line, sizeof(line), errstr, errlen) != 0) {
		return -1;
	}
	if (sign_from_hex(line, k->bytes, sizeof(k->bytes), &len) != 0 || len != want) {
		sodium_memzero(line, sizeof(line));
		snprintf(errstr, errlen, "%s: %s: expected %zu bytes in hex (%zu characters)", what,
		         path, want, want * 2);
		return -1;
	}
	sodium_memzero(line, sizeof(line));
	k->len = len;
	return 0;
}

int sign_load_secret_named(const char *prefix, enum sign_scheme scheme, const char *id,
                           const char *path, struct sign_key *out, char *errstr, size_t errlen)
{
	char full[4096], what[64];
	const char *file;
	struct stat sb;

	memset(out, 0, sizeof(*out));
	if (id == NULL || id[0] == '\0' || strlen(id) > SIGN_KEY_ID_MAX) {
		snprintf(errstr, errlen, "%skey_id: must be 1 to %d characters", prefix,
		         SIGN_KEY_ID_MAX);
		return -1;
	}
	snprintf(out->id, sizeof(out->id), "%s", id);
	snprintf(what, sizeof(what), "%skey_file", prefix);
	file = secret_resolve(path, full, sizeof(full));
	if (stat(file, &sb) == 0 && (sb.st_mode & 077) != 0) {
		snprintf(errstr, errlen, "%s: %s may be read by others (mode %04o): chmod 600 it", what,
		         file, (unsigned)(sb.st_mode & 07777));
		return -1;
	}
	return read_key(what, path,
	                scheme == SIGN_MAC ? crypto_auth_KEYBYTES : crypto_sign_SECRETKEYBYTES, out,
	                errstr, errlen);
}

int sign_load_secret(enum sign_scheme scheme, const char *id, const char *path,
                     struct sign_key *out, char *errstr, size_t errlen)
{
	return sign_load_secret_named("security.", scheme, id, path, out, errstr, errlen);
}

int sign_load_keyring(enum sign_scheme scheme, const char *dir, struct sign_keyring *out,
                      char *errstr, size_t errlen)
{
	size_t want = scheme == SIGN_MAC ? crypto_auth_KEYBYTES : crypto_sign_PUBLICKEYBYTES;
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (d == NULL) {
		snprintf(errstr, errlen, "security.keyring: %s: %s", dir, strerror(errno));
		return -1;
	}
	while (rc == 0 && (e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		struct sign_key *grown;
		char path[4096];

		if (n <= 4 || strcmp(e->d_name + n - 4, ".key") != 0 || n - 4 > SIGN_KEY_ID_MAX) {
			continue;
		}
		grown = realloc(out->keys, (out->n + 1) * sizeof(*grown));
		if (grown == NULL) {
			snprintf(errstr, errlen, "out of memory");
			rc = -1;
			break;
		}
		out->keys = grown;
		memset(&grown[out->n], 0, sizeof(grown[out->n]));
		snprintf(grown[out->n].id, sizeof(grown[out->n].id), "%.*s", (int)(n - 4), e->d_name);
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		rc = read_key("security.keyring", path, want, &grown[out->n], errstr, errlen);
		if (rc == 0) {
			out->n++;
		}
	}
	closedir(d);
	if (rc != 0) {
		sign_keyring_free(out);
	}
	return rc;
}

void sign_keyring_free(struct sign_keyring *k)
{
	if (k->keys != NULL) {
		sodium_memzero(k->keys, k->n * sizeof(*k->keys));
	}
	free(k->keys);
	k->keys = NULL;
	k->n = 0;
}

const struct sign_key *sign_keyring_find(const struct sign_keyring *k, const char *id)
{
	for (size_t i = 0; i < k->n; i++) {
		if (strcmp(k->keys[i].id, id) == 0) {
			return &k->keys[i];
		}
	}
	return NULL;
}
