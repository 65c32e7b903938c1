/* security.c: signing and checking messages as the [security] keys say. */
#include "security.h"

#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "config.h"

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
	char *allow; /* "pattern=id+id,..." or "" (any key of the keyring) */
	int64_t window_ms;
	pthread_mutex_t mu;
	struct seen *seen;
};

int security_load(const warren_config *cfg, struct security **out, char *errstr, size_t errlen)
{
	enum sign_scheme scheme = (enum sign_scheme)config_int(cfg, CFG_SECURITY_SCHEME);
	struct security *s;

	*out = NULL;
	if (scheme == SIGN_NONE) {
		return 0;
	}
	if (sodium_init() < 0) {
		snprintf(errstr, errlen, "libsodium failed to initialise");
		return -1;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL || (s->seen = calloc(SEEN_SLOTS, sizeof(*s->seen))) == NULL ||
	    (s->allow = strdup(config_str(cfg, CFG_SECURITY_ALLOW))) == NULL) {
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
	*out = s;
	return 0;
}

void security_free(struct security *s)
{
	if (s == NULL) {
		return;
	}
	sodium_memzero(&s->ours, sizeof(s->ours));
	sign_keyring_free(&s->ring);
	free(s->allow);
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
                         const void *body, size_t len, struct signature *out)
{
	struct sign_fields f;

	fields_of(m, true, status, envelope_content_type(m->format), body, len, &f);
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
 * pattern (fnmatch: "user.*", "*") matches decides; no list, any key. */
static bool allowed(const struct security *s, const char *method, const char *key_id)
{
	char *copy, *save = NULL;
	bool ok = false, decided = false;

	if (s->allow[0] == '\0') {
		return true;
	}
	copy = strdup(s->allow);
	for (char *entry = copy != NULL ? strtok_r(copy, ",", &save) : NULL;
	     entry != NULL && !decided; entry = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(entry, '='), *isave = NULL;

		if (eq == NULL) {
			continue;
		}
		*eq = '\0';
		if (fnmatch(entry, method, 0) != 0) {
			continue;
		}
		decided = true;
		for (char *id = strtok_r(eq + 1, "+", &isave); id != NULL;
		     id = strtok_r(NULL, "+", &isave)) {
			ok = ok || strcmp(id, key_id) == 0;
		}
	}
	free(copy);
	return ok;
}

/* Records (key, message id) until the end of the window; false when it
 * was there already. */
static bool first_time(struct security *s, const char *key_id, const char *message_id,
                       int64_t until)
{
	crypto_generichash_state st;
	uint64_t h;
	int64_t now = warren_now_ms();
	struct seen *oldest = NULL;
	bool fresh = true;

	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)key_id, strlen(key_id) + 1);
	crypto_generichash_update(&st, (const unsigned char *)message_id, strlen(message_id));
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

int security_check_request(struct security *s, const amqp_basic_properties_t *p,
                           const struct envelope_meta *m, const void *body, size_t len,
                           bool redelivered, char *why, size_t whylen)
{
	struct sign_fields f;
	const struct sign_key *key;

	fields_of(m, false, 0, "", body, len, &f);
	key = check_signature(s, p, &f, why, whylen);
	if (key == NULL) {
		return WARREN_STATUS_UNAUTHENTICATED;
	}
	if (!allowed(s, m->method, key->id)) {
		snprintf(why, whylen, "key \"%s\" may not call %s", key->id, m->method);
		return WARREN_STATUS_PERMISSION_DENIED;
	}
	if (!redelivered && m->message_id[0] != '\0' &&
	    !first_time(s, key->id, m->message_id, f.signed_at_ms + s->window_ms)) {
		snprintf(why, whylen, "replay of message_id %s from key \"%s\"", m->message_id,
		         key->id);
		return WARREN_STATUS_ALREADY_EXISTS;
	}
	return WARREN_STATUS_OK;
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
