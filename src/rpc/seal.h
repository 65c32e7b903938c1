/* seal.h: encrypted bodies (security.encrypt). A caller and a service share
 * one 32-byte key, from the keys they already hold for signing:
 *
 *   mac      BLAKE2b-256 of "warren-seal-v1", keyed with the caller's shared
 *            secret (which the service has in its keyring);
 *   ed25519  crypto_box_beforenm of one side's X25519 secret key and the
 *            other's X25519 public key, both converted from the Ed25519 keys
 *            (the same key on both sides).
 *
 * A sealed body is a 24-byte random nonce followed by
 * crypto_secretbox_easy (XSalsa20-Poly1305) of the plain body under that
 * key; the message says so with content_encoding SEAL_ENCODING, and its
 * content_type stays that of the plain body. */
#ifndef WARREN_SEAL_H
#define WARREN_SEAL_H

#include <stddef.h>

#include "sign.h"

#define SEAL_ENCODING  "x-warren-sealed"
#define SEAL_KEY_BYTES 32
/* Bytes a sealed body has beyond the plain one. */
#define SEAL_OVERHEAD 40

/* The key a caller and a service share. mac: secret is the caller's shared
 * secret, peer unused (NULL). ed25519: secret is our Ed25519 secret key,
 * peer the other side's Ed25519 public key. 0, or -1 when peer is not a
 * usable public key. */
int seal_pair_key(enum sign_scheme scheme, const struct sign_key *secret,
                  const struct sign_key *peer, unsigned char key[SEAL_KEY_BYTES]);

/* plain -> nonce || box in *out (malloc'd, len + SEAL_OVERHEAD bytes).
 * 0, or -1 when out of memory. */
int seal_body(const unsigned char key[SEAL_KEY_BYTES], const void *plain, size_t len, void **out,
              size_t *outlen);
/* The reverse; -1 when sealed was not made with key or was altered (or out
 * of memory: *out stays NULL either way). */
int seal_open(const unsigned char key[SEAL_KEY_BYTES], const void *sealed, size_t len, void **out,
              size_t *outlen);

#endif
