/* sign.h: signed messages (libsodium). Two schemes: keyed MAC (HMAC-SHA-512-
 * 256 over a shared per-service secret) and Ed25519 (each party its own key
 * pair; workers hold only public keys). What is signed is a BLAKE2b-512
 * digest of the canonical encoding of a message, documented in warren(7):
 *
 *   "warren-sig-v1" 0x00, then each field as a 4-byte big-endian length and
 *   its bytes: key id, kind ("request" or "reply"), method (requests) or
 *   status in decimal (replies), message_id, correlation_id, reply_to,
 *   rpc-deadline in decimal ("" when absent), rpc-signed-at in decimal,
 *   content_type, content_encoding ("" when absent), body.
 *
 * Headers: rpc-key-id (string), rpc-signed-at (int64, Unix ms) and
 * rpc-signature (bytes). */
#ifndef WARREN_SIGN_H
#define WARREN_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "warren.h"

#define SIGN_KEY_ID_MAX 64
#define SIGN_MAX_SIG 64

enum sign_scheme { SIGN_NONE, SIGN_MAC, SIGN_ED25519 };

/* The fields of a message that its signature covers. */
struct sign_fields {
	const char *key_id;
	bool reply;
	const char *method;         /* requests */
	int status;                 /* replies */
	const char *message_id, *correlation_id, *reply_to;
	int64_t deadline_ms;        /* 0: none */
	int64_t signed_at_ms;
	const char *content_type;
	const char *content_encoding; /* NULL or "": none */
	const void *body;
	size_t body_len;
};

/* One key: ours (secret) or a peer's (mac secret or Ed25519 public key). */
struct sign_key {
	char id[SIGN_KEY_ID_MAX + 1];
	unsigned char bytes[64]; /* mac: 32; ed25519 secret: 64; public: 32 */
	size_t len;
};

/* A directory of peer keys, one file per key: ID.key holding the key in
 * hex on its first line. Two ids can be live at once: rotation. */
struct sign_keyring {
	struct sign_key *keys;
	size_t n;
};

/* Reads our secret key from path (a relative path is a systemd credential,
 * see secret.h): hex of 32 bytes (mac) or 64 bytes (ed25519). A file that
 * group or others may read is refused. 0, or -1 with errstr. */
int sign_load_secret(enum sign_scheme scheme, const char *id, const char *path,
                     struct sign_key *out, char *errstr, size_t errlen);
/* The same, for the keys PREFIXkey_id and PREFIXkey_file ("security.",
 * "security.retiring_"), as the errors name them. */
int sign_load_secret_named(const char *prefix, enum sign_scheme scheme, const char *id,
                           const char *path, struct sign_key *out, char *errstr, size_t errlen);
/* Reads every ID.key file of dir. 0, or -1 with errstr. */
int sign_load_keyring(enum sign_scheme scheme, const char *dir, struct sign_keyring *out,
                      char *errstr, size_t errlen);
void sign_keyring_free(struct sign_keyring *k);
const struct sign_key *sign_keyring_find(const struct sign_keyring *k, const char *id);

/* The signature of f with our key into sig (*siglen set). */
void sign_make(enum sign_scheme scheme, const struct sign_key *ours, const struct sign_fields *f,
               unsigned char *sig, size_t *siglen);
/* Whether sig is the signature of f by key. */
bool sign_check(enum sign_scheme scheme, const struct sign_key *key, const struct sign_fields *f,
                const unsigned char *sig, size_t siglen);

/* Hex <-> bytes helpers for key files and tools. */
int sign_from_hex(const char *hex, unsigned char *out, size_t cap, size_t *len);
void sign_to_hex(const unsigned char *in, size_t len, char *out);

#endif
