/* security.c: signing and checking messages as the [security] keys say. */
#include "security.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "config.h"
#include "patterns.h"
#include "seal.h"

#define SEEN_SLOTS 65536 /* recent (key, message id) pairs; a power of two */
#define SEEN_PROBES 16

struct seen {
	uint64_t hash;
	int64_t until_ms; /* 0: free */
};

struct security {
	enum sign_scheme scheme;
	struct sign_key ours;
	struct sign_keyring ring;
	char *allow;   /* "pattern=id+id,..." or "" (any key of the keyring) */
	char *encrypt; /* "pattern[=id],...": methods whose bodies are sealed */
	/* The key shared with each key of the ring (seal.h): by a worker with
	 * its callers; by an ed25519 caller with its services. */
	unsigned char (*pair)[SEAL_KEY_BYTES];
	/* ed25519: a service's former key while it is replaced, and the keys
	 * it shares with each key of the ring (NULL: none). */
	struct sign_key retiring;
	unsigned char (*retiring_pair)[SEAL_KEY_BYTES];
	unsigned char own_pair[SEAL_KEY_BYTES]; /* mac: a caller's, from its secret */
	unsigned char retry_key[32];            /* of rpc-retry-token, from our secret */
	int64_t window_ms;
	pthread_mutex_t mu;
	struct seen *seen;
};

/* The keys shared with each key of the ring, and a mac caller's own. */
static int pair_keys(struct security *s, const char *ring, char *errstr, size_t errlen)
{
	bool mac = s->scheme == SIGN_MAC;

	s->pair = calloc(s->ring.n + 1, sizeof(*s->pair));
	if (s->pair == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < s->ring.n; i++) {
		const struct sign_key *k = &s->ring.keys[i];
		if (seal_pair_key(s->scheme, mac ? k : &s->ours, mac ? NULL : k, s->pair[i]) != 0) {
			snprintf(errstr, errlen,
			         "security.keyring: %s/%s.key: not an Ed25519 public key", ring,
			         k->id);
			return -1;
		}
	}
	if (mac) {
		seal_pair_key(SIGN_MAC, &s->ours, NULL, s->own_pair);
	}
	if (s->retiring.len > 0) {
		s->retiring_pair = calloc(s->ring.n + 1, sizeof(*s->retiring_pair));
		if (s->retiring_pair == NULL) {
			snprintf(errstr, errlen, "out of memory");
			return -1;
		}
		for (size_t i = 0; i < s->ring.n; i++) {
			seal_pair_key(SIGN_ED25519, &s->retiring, &s->ring.keys[i], s->retiring_pair[i]);
		}
	}
	return 0;
}

/* security.retiring_key_*: both or neither, and only with ed25519 (with
 * mac the keys that open bodies are the callers', in the keyring). */
static int load_retiring(struct security *s, const warren_config *cfg, char *errstr,
                         size_t errlen)
{
	const char *id = config_str(cfg, CFG_SECURITY_RETIRING_KEY_ID),
	           *file = config_str(cfg, CFG_SECURITY_RETIRING_KEY_FILE);

	if (id[0] == '\0' && file[0] == '\0') {
		return 0;
	}
	if (s->scheme != SIGN_ED25519) {
		snprintf(errstr, errlen,
		         "security.retiring_key_file: only with security.scheme ed25519 (with mac, "
		         "the keyring holds the secrets that open bodies)");
		return -1;
	}
	if (file[0] == '\0') {
		snprintf(errstr, errlen, "security.retiring_key_file: needed with "
		                         "security.retiring_key_id");
		return -1;
	}
	return sign_load_secret_named("security.retiring_", SIGN_ED25519, id, file, &s->retiring,
	                              errstr, errlen);
}

int security_load(const warren_config *cfg, struct security **out, char *errstr, size_t errlen)
{
	enum sign_scheme scheme = (enum sign_scheme)config_int(cfg, CFG_SECURITY_SCHEME);
	struct security *s;

	*out = NULL;
	if (scheme == SIGN_NONE) {
		if (config_str(cfg, CFG_SECURITY_ENCRYPT)[0] != '\0') {
			snprintf(errstr, errlen,
			         "security.encrypt: needs security.scheme mac or ed25519 (the keys "
			         "that encrypt are those that sign)");
			return -1;
		}
		return 0;
	}
	if (sodium_init() < 0) {
		snprintf(errstr, errlen, "libsodium failed to initialise");
		return -1;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL || (s->seen = calloc(SEEN_SLOTS, sizeof(*s->seen))) == NULL ||
	    (s->allow = strdup(config_str(cfg, CFG_SECURITY_ALLOW))) == NULL ||
	    (s->encrypt = strdup(config_str(cfg, CFG_SECURITY_ENCRYPT))) == NULL) {
		snprintf(errstr, errlen, "out of memory");
		security_free(s);
		return -1;
	}
	s->scheme = scheme;
	s->window_ms = config_int(cfg, CFG_SECURITY_WINDOW);
	pthread_mutex_init(&s->mu, NULL);
	if (sign_load_secret(scheme, config_str(cfg, CFG_SECURITY_KEY_ID),
	                     config_str(cfg, CFG_SECURITY_KEY_FILE), &s->ours, errstr, errlen) != 0 ||
	    sign_load_keyring(scheme, config_str(cfg, CFG_SECURITY_KEYRING), &s->ring, errstr,
	                      errlen) != 0) {
		security_free(s);
		return -1;
	}
	if (load_retiring(s, cfg, errstr, errlen) != 0) {
		security_free(s);
		return -1;
	}
	crypto_generichash(s->retry_key, sizeof(s->retry_key), (const unsigned char *)"warren-retry-v1",
	                   15, s->ours.bytes, s->ours.len);
	if (pair_keys(s, config_str(cfg, CFG_SECURITY_KEYRING), errstr, errlen) != 0) {
		security_free(s);
		return -1;
	}
	*out = s;
	return 0;
}

void security_free(struct security *s)
{
	if (s == NULL) {
		return;
	}
	sodium_memzero(&s->ours, sizeof(s->ours));
	if (s->pair != NULL) {
		sodium_memzero(s->pair, (s->ring.n + 1) * sizeof(*s->pair));
	}
	if (s->retiring_pair != NULL) {
		sodium_memzero(s->retiring_pair, (s->ring.n + 1) * sizeof(*s->retiring_pair));
	}
	free(s->retiring_pair);
	sodium_memzero(&s->retiring, sizeof(s->retiring));
	sodium_memzero(s->own_pair, sizeof(s->own_pair));
	sodium_memzero(s->retry_key, sizeof(s->retry_key));
	free(s->pair);
	sign_keyring_free(&s->ring);
	free(s->allow);
	free(s->encrypt);
	free(s->seen);
	free(s);
}

/* Direct reply-to names are rewritten by the broker on the way
 * ("amq.rabbitmq.reply-to.g1h2..."): the signature covers the name the
 * caller wrote. */
static const char *canonical_reply_to(const char *r)
{
	static const char direct[] = "amq.rabbitmq.reply-to";

	return strncmp(r, direct, sizeof(direct) - 1) == 0 ? direct : r;
}

static void fields_of(const struct envelope_meta *m, bool reply, int status,
                      const char *content_type, const void *body, size_t len,
                      struct sign_fields *f)
{
	*f = (struct sign_fields){.reply = reply,
	                          .method = m->method,
	                          .status = status,
	                          .message_id = reply ? "" : m->message_id,
	                          .correlation_id = m->correlation_id,
	                          .reply_to = reply ? "" : canonical_reply_to(m->reply_to),
	                          .deadline_ms = reply ? 0 : m->deadline_ms,
	                          .content_type = content_type,
	                          .content_encoding = m->sealed ? SEAL_ENCODING : "",
	                          .body = body,
	                          .body_len = len};
}

static void sign_fields_now(const struct security *s, struct sign_fields *f,
                            struct signature *out)
{
	snprintf(out->key_id, sizeof(out->key_id), "%s", s->ours.id);
	out->signed_at_ms = warren_now_ms();
	f->key_id = out->key_id;
	f->signed_at_ms = out->signed_at_ms;
	sign_make(s->scheme, &s->ours, f, out->sig, &out->len);
}

void security_sign_request(const struct security *s, const struct envelope_meta *m,
                           const void *body, size_t len, struct signature *out)
{
	struct sign_fields f;

	fields_of(m, false, 0, envelope_content_type(m->format), body, len, &f);
	sign_fields_now(s, &f, out);
}

void security_sign_reply(const struct security *s, const struct envelope_meta *m, int status,
                         bool sealed, const void *body, size_t len, struct signature *out)
{
	struct sign_fields f;

	fields_of(m, true, status, envelope_content_type(m->format), body, len, &f);
	f.content_encoding = sealed ? SEAL_ENCODING : "";
	sign_fields_now(s, &f, out);
}

/* ------------------------------------------------------------ checking */

static const amqp_field_value_t *header(const amqp_basic_properties_t *p, const char *key)
{
	size_t n = strlen(key);

	if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG)) {
		return NULL;
	}
	for (int i = 0; i < p->headers.num_entries; i++) {
		const amqp_table_entry_t *e = &p->headers.entries[i];
		if (e->key.len == n && memcmp(e->key.bytes, key, n) == 0) {
			return &e->value;
		}
	}
	return NULL;
}

/* The signature headers of p, checked against the keyring: the key on
 * success, else NULL with why. */
static const struct sign_key *check_signature(const struct security *s,
                                              const amqp_basic_properties_t *p,
                                              struct sign_fields *f, char *why, size_t whylen)
{
	const amqp_field_value_t *id = header(p, "rpc-key-id"), *at = header(p, "rpc-signed-at"),
	                         *sig = header(p, "rpc-signature");
	char key_id[SIGN_KEY_ID_MAX + 1];
	char content_type[128] = "";
	const struct sign_key *key;

	if (id == NULL || at == NULL || sig == NULL) {
		snprintf(why, whylen, "not signed (security.scheme is %s)",
		         s->scheme == SIGN_MAC ? "mac" : "ed25519");
		return NULL;
	}
	if ((id->kind != AMQP_FIELD_KIND_UTF8 && id->kind != AMQP_FIELD_KIND_BYTES) ||
	    id->value.bytes.len > SIGN_KEY_ID_MAX || at->kind != AMQP_FIELD_KIND_I64 ||
	    (sig->kind != AMQP_FIELD_KIND_BYTES && sig->kind != AMQP_FIELD_KIND_UTF8)) {
		snprintf(why, whylen, "malformed signature headers");
		return NULL;
	}
	snprintf(key_id, sizeof(key_id), "%.*s", (int)id->value.bytes.len,
	         (const char *)id->value.bytes.bytes);
	key = sign_keyring_find(&s->ring, key_id);
	if (key == NULL) {
		snprintf(why, whylen, "unknown key \"%s\"", key_id);
		return NULL;
	}
	if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
		snprintf(content_type, sizeof(content_type), "%.*s", (int)p->content_type.len,
		         (const char *)p->content_type.bytes);
	}
	f->key_id = key->id; /* the same text, in storage that outlives this call */
	f->signed_at_ms = at->value.i64;
	f->content_type = content_type;
	if (!sign_check(s->scheme, key, f, sig->value.bytes.bytes, sig->value.bytes.len)) {
		f->content_type = "";
		snprintf(why, whylen, "bad signature for key \"%s\"", key_id);
		return NULL;
	}
	f->content_type = ""; /* content_type is about to go out of scope */
	if (llabs(warren_now_ms() - f->signed_at_ms) > s->window_ms) {
		snprintf(why, whylen, "signed %lld ms away from now, outside security.window",
		         (long long)(warren_now_ms() - f->signed_at_ms));
		return NULL;
	}
	return key;
}

/* Whether key may call method: the first entry of security.allow whose
 * pattern matches decides; no list, any key. */
static bool allowed(const struct security *s, const char *method, const char *key_id)
{
	char ids[1024];
	size_t n = strlen(key_id);

	if (s->allow[0] == '\0') {
		return true;
	}
	if (!patterns_match(s->allow, method, ids, sizeof(ids))) {
		return false;
	}
	for (const char *id = ids; *id != '\0';) {
		size_t len = strcspn(id, "+");
		if (len == n && memcmp(id, key_id, n) == 0) {
			return true;
		}
		id += len + (id[len] == '+');
	}
	return false;
}

/* Records (key, message id) until the end of the window; false when it
 * was there already. */
static bool first_time(struct security *s, const char *key_id, const char *message_id,
                       int attempt, int64_t until)
{
	crypto_generichash_state st;
	uint64_t h;
	int64_t now = warren_now_ms();
	struct seen *oldest = NULL;
	bool fresh = true;

	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)key_id, strlen(key_id) + 1);
	crypto_generichash_update(&st, (const unsigned char *)message_id, strlen(message_id) + 1);
	crypto_generichash_update(&st, (const unsigned char *)&attempt, sizeof(attempt));
	crypto_generichash_final(&st, (unsigned char *)&h, sizeof(h));
	pthread_mutex_lock(&s->mu);
	for (int i = 0; i < SEEN_PROBES; i++) {
		struct seen *slot = &s->seen[(h + (uint64_t)i) & (SEEN_SLOTS - 1)];
		if (slot->until_ms > now && slot->hash == h) {
			fresh = false;
			break;
		}
		if (oldest == NULL || slot->until_ms < oldest->until_ms) {
			oldest = slot;
		}
	}
	if (fresh) {
		/* A free (expired) slot, or the one nearest its end. */
		oldest->hash = h;
		oldest->until_ms = until;
	}
	pthread_mutex_unlock(&s->mu);
	return fresh;
}

void security_retry_token(const struct security *s, const char *signer, const char *message_id,
                          int attempt, unsigned char out[SECURITY_TOKEN_BYTES])
{
	crypto_generichash_state st;
	char n[16];

	snprintf(n, sizeof(n), "%d", attempt);
	crypto_generichash_init(&st, s->retry_key, sizeof(s->retry_key), SECURITY_TOKEN_BYTES);
	crypto_generichash_update(&st, (const unsigned char *)signer, strlen(signer) + 1);
	crypto_generichash_update(&st, (const unsigned char *)message_id, strlen(message_id) + 1);
	crypto_generichash_update(&st, (const unsigned char *)n, strlen(n));
	crypto_generichash_final(&st, out, SECURITY_TOKEN_BYTES);
}

/* Whether p carries the retry token of this attempt. */
static bool retry_token_ok(const struct security *s, const amqp_basic_properties_t *p,
                           const char *signer, const struct envelope_meta *m)
{
	const amqp_field_value_t *t = header(p, SECURITY_RETRY_TOKEN);
	unsigned char want[SECURITY_TOKEN_BYTES];

	if (t == NULL || t->kind != AMQP_FIELD_KIND_BYTES ||
	    t->value.bytes.len != SECURITY_TOKEN_BYTES) {
		return false;
	}
	security_retry_token(s, signer, m->message_id, m->attempt, want);
	return sodium_memcmp(want, t->value.bytes.bytes, SECURITY_TOKEN_BYTES) == 0;
}

/* The pair key shared with the ring's key id, or NULL. */
static const unsigned char *pair_of(const struct security *s, const char *id)
{
	const struct sign_key *k = sign_keyring_find(&s->ring, id);

	return k != NULL ? s->pair[k - s->ring.keys] : NULL;
}

int security_request_key(const struct security *s, const char *method,
                         const unsigned char **key, const char **to)
{
	char id[256];
	const struct sign_key *k;

	*key = NULL;
	*to = "";
	if (s == NULL || !patterns_match(s->encrypt, method, id, sizeof(id))) {
		return 0;
	}
	if (s->scheme == SIGN_MAC) {
		*key = s->own_pair;
		return 0;
	}
	k = sign_keyring_find(&s->ring, id);
	if (k == NULL) {
		return -1;
	}
	*key = s->pair[k - s->ring.keys];
	*to = k->id;
	return 0;
}

int security_check_encrypt(const struct security *s, const char *keyring, char *errstr,
                           size_t errlen)
{
	const char *p = s != NULL ? s->encrypt : "";
	char pattern[256], id[256];

	while (s != NULL && s->scheme == SIGN_ED25519 &&
	       patterns_next(&p, pattern, sizeof(pattern), id, sizeof(id))) {
		if (id[0] == '\0') {
			snprintf(errstr, errlen,
			         "security.encrypt: \"%s\": with ed25519 each entry is METHOD=ID, "
			         "ID the "
			         "service's key in security.keyring",
			         pattern);
			return -1;
		}
		if (pair_of(s, id) == NULL) {
			snprintf(errstr, errlen, "security.encrypt: no key \"%s\" in %s", id,
			         keyring);
			return -1;
		}
	}
	return 0;
}

/* A request's body, opened with the key shared with its signer; a request
 * for a method of security.encrypt sent in the clear is refused. */
static int open_request(const struct security *s, const struct envelope_meta *m,
                        const struct sign_key *signer, const void *body, size_t len,
                        struct checked *out, char *why, size_t whylen)
{
	char ignored[256];

	if (!m->sealed) {
		if (patterns_match(s->encrypt, m->method, ignored, sizeof(ignored))) {
			snprintf(why, whylen, "%s must be encrypted (security.encrypt)", m->method);
			return WARREN_STATUS_PERMISSION_DENIED;
		}
		return WARREN_STATUS_OK;
	}
	if (m->sealed_to[0] == '\0' || strcmp(m->sealed_to, s->ours.id) == 0) {
		out->key = s->pair[signer - s->ring.keys];
	} else if (s->retiring_pair != NULL && strcmp(m->sealed_to, s->retiring.id) == 0) {
		out->key = s->retiring_pair[signer - s->ring.keys];
	} else {
		snprintf(why, whylen, "the body is encrypted to key \"%s\", which this worker does not "
		                      "hold",
		         m->sealed_to);
		return WARREN_STATUS_UNAUTHENTICATED;
	}
	if (seal_open(out->key, body, len, &out->body, &out->len) != 0) {
		out->key = NULL;
		snprintf(why, whylen,
		         "the body cannot be decrypted with the key shared with \"%s\"",
		         signer->id);
		return WARREN_STATUS_UNAUTHENTICATED;
	}
	return WARREN_STATUS_OK;
}

int security_check_request(struct security *s, const amqp_basic_properties_t *p,
                           const struct envelope_meta *m, const void *body, size_t len,
                           bool redelivered, struct checked *out, char *why, size_t whylen)
{
	struct sign_fields f;
	const struct sign_key *key;

	*out = (struct checked){0};
	fields_of(m, false, 0, "", body, len, &f);
	key = check_signature(s, p, &f, why, whylen);
	if (key == NULL) {
		return WARREN_STATUS_UNAUTHENTICATED;
	}
	if (!allowed(s, m->method, key->id)) {
		snprintf(why, whylen, "key \"%s\" may not call %s", key->id, m->method);
		return WARREN_STATUS_PERMISSION_DENIED;
	}
	snprintf(out->signer, sizeof(out->signer), "%s", key->id);
	if (m->attempt > 1 && !retry_token_ok(s, p, key->id, m)) {
		snprintf(why, whylen, "attempt %d of message_id %s without a valid %s", m->attempt,
		         m->message_id, SECURITY_RETRY_TOKEN);
		return WARREN_STATUS_UNAUTHENTICATED;
	}
	if (!redelivered && m->message_id[0] != '\0' &&
	    !first_time(s, key->id, m->message_id, m->attempt, f.signed_at_ms + s->window_ms)) {
		snprintf(why, whylen, "replay of message_id %s from key \"%s\"", m->message_id,
		         key->id);
		return WARREN_STATUS_ALREADY_EXISTS;
	}
	return open_request(s, m, key, body, len, out, why, whylen);
}

int security_check_reply(const struct security *s, const amqp_basic_properties_t *p,
                         const struct envelope_meta *m, const void *body, size_t len, char *why,
                         size_t whylen)
{
	struct sign_fields f;

	fields_of(m, true, m->status, "", body, len, &f);
	return check_signature(s, p, &f, why, whylen) != NULL ? WARREN_STATUS_OK
	                                                     : WARREN_STATUS_UNAUTHENTICATED;
}

/* ------------------------------------------------- signing any request */

void security_sign_message(const struct security *s, const amqp_basic_properties_t *p,
                           const struct envelope_meta *m, const void *body, size_t len,
                           struct signature *out)
{
	char content_type[128] = "";
	struct sign_fields f;

	/* The content type as sent, which is what a worker checks. */
	if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
		snprintf(content_type, sizeof(content_type), "%.*s", (int)p->content_type.len,
		         (const char *)p->content_type.bytes);
	}
	fields_of(m, false, 0, content_type, body, len, &f);
	sign_fields_now(s, &f, out);
}
