/* security.h: who may call what. From the [security] keys: our key, the
 * peers' keys, the per-method allow list, the time window and the record of
 * recent signatures that stops replays. Signs outgoing requests and
 * replies; checks incoming ones before their body is even decoded. */
#ifndef WARREN_SECURITY_H
#define WARREN_SECURITY_H

#include <amqp.h>

#include "envelope.h"
#include "sign.h"
#include "warren.h"

struct security;

/* NULL in *out (and 0) when security.scheme is none; -1 with errstr on a
 * bad key, keyring or allow list. */
int security_load(const warren_config *cfg, struct security **out, char *errstr, size_t errlen);
void security_free(struct security *s); /* NULL-safe */

/* A signature to carry: filled by security_sign_*, added to a message's
 * properties by envelope_add_signature. */
struct signature {
	char key_id[SIGN_KEY_ID_MAX + 1];
	int64_t signed_at_ms;
	unsigned char sig[SIGN_MAX_SIG];
	size_t len;
};

void security_sign_request(const struct security *s, const struct envelope_meta *m,
                           const void *body, size_t len, struct signature *out);
/* sealed: the reply's body is sealed (for a sealed request). */
void security_sign_reply(const struct security *s, const struct envelope_meta *m, int status,
                         bool sealed, const void *body, size_t len, struct signature *out);

/* Signs a request that is already in properties p (m read from them by
 * envelope_read, its method filled from the routing key when p has no
 * type), as a worker will check it: for rpc-dlq, whose replay of a dead
 * letter is the operator's own call. */
void security_sign_message(const struct security *s, const amqp_basic_properties_t *p,
                           const struct envelope_meta *m, const void *body, size_t len,
                           struct signature *out);

/* Encrypted bodies (security.encrypt, seal.h). A caller: *key is the key
 * that seals requests for method (and opens their replies), or NULL when
 * they go in the clear; *to the service key id they are sealed to, for
 * rpc-sealed-to ("" with mac). Both live as long as s. -1 when the entry
 * that matches names no key of the keyring. NULL-safe. A worker opens a
 * body sealed to its key or to its security.retiring_key_id. */
int security_request_key(const struct security *s, const char *method,
                         const unsigned char **key, const char **to);
/* A caller at start (NULL-safe): -1 with errstr when an entry of
 * security.encrypt names no key of the keyring (directory keyring). */
int security_check_encrypt(const struct security *s, const char *keyring, char *errstr,
                           size_t errlen);

/* What checking a request found: whether it is authentic, and its
 * signer's key id; when it came sealed, body is the opened one (malloc'd,
 * the caller frees it) and key the one to seal its reply with (otherwise
 * both NULL). */
struct checked {
	/* Signed by a key of the keyring, within the window, not a replay: its
	 * reply_to and correlation id are its signer's, so that even a refusal
	 * (not allowed, a body that does not open) may be answered. False
	 * otherwise: nothing of it may be trusted, not even where to answer. */
	bool authentic;
	char signer[SIGN_KEY_ID_MAX + 1];
	void *body;
	size_t len;
	const unsigned char *key;
};

/* A worker's retry of a signed request (attempt > 1, through a delay tier)
 * carries rpc-retry-token: a keyed BLAKE2b-256 of the signer's key id, the
 * message id and the attempt, under a key only this service's workers
 * derive (from their secret key), so that a retry is told from a replay
 * and nobody else can make one. */
#define SECURITY_RETRY_TOKEN "rpc-retry-token"
#define SECURITY_TOKEN_BYTES 32
void security_retry_token(const struct security *s, const char *signer, const char *message_id,
                          int attempt, unsigned char out[SECURITY_TOKEN_BYTES]);

/* Checks a delivered request: WARREN_STATUS_OK; UNAUTHENTICATED (no, bad or
 * stale signature, unknown key); ALREADY_EXISTS for a replay (its signature
 * was seen within the window, and the broker did not mark it redelivered: a
 * redelivery is taken, and recorded; a worker's retry, attempt > 1, carries
 * the same signature, counts once per attempt and needs a valid
 * rpc-retry-token, else UNAUTHENTICATED); UNAUTHENTICATED too when the
 * record of signatures (security.replay_cache entries) is full and the
 * request was signed before the oldest signature it had to forget, since a
 * replay of that one could not be told; PERMISSION_DENIED (the key may not
 * call this method); for a sealed body, UNAUTHENTICATED when it cannot be
 * opened, and OK with the opened body in *out; for a method of
 * security.encrypt sent in the clear, PERMISSION_DENIED. A caller's own
 * retry under the same message id is a new request, signed anew: not a
 * replay. out->authentic says whether a refusal may be answered. why says
 * which, never with the body. The record is per struct security, so per
 * process: see warren(7). */
int security_check_request(struct security *s, const amqp_basic_properties_t *p,
                           const struct envelope_meta *m, const void *body, size_t len,
                           bool redelivered, struct checked *out, char *why, size_t whylen);
/* Checks a reply: WARREN_STATUS_OK or UNAUTHENTICATED with why. */
int security_check_reply(const struct security *s, const amqp_basic_properties_t *p,
                         const struct envelope_meta *m, const void *body, size_t len, char *why,
                         size_t whylen);

#endif
