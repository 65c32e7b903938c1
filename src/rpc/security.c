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
#include "wire.h"

/* One signature seen, in the replay record. Links are an entry's index
 * + 1, so that 0 (calloc's) means none. */
struct seen {
	uint64_t hash;    /* of the signer's key id, the signature and the attempt */
	int64_t until_ms; /* its signing time + the window: remembered until then */
	uint32_t next;    /* the next entry of its bucket (or of the free list) */
};

/* The signatures seen within the window, at most cap of them: a hash
 * table (buckets of chained entries) to find one, and a min-heap by
 * until_ms to forget, first, the one whose window ends first. */
struct replays {
	struct seen *e;   /* cap entries */
	uint32_t *heap;   /* the indexes of the n entries in use */
	uint32_t *bucket; /* nb chain heads, nb a power of two */
	uint32_t cap, n, nb;
	uint32_t used;      /* entries ever taken: e[used..cap) were never used */
	uint32_t free;      /* the free list */
	int64_t horizon_ms; /* a signature of this time or older may have been forgotten */
	int64_t now_ms;     /* the latest time it was used at: it never goes back */
	unsigned char key[crypto_generichash_KEYBYTES]; /* of the hash: random per process */
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
	pthread_mutex_t mu; /* of seen */
	struct replays seen;
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

/* ------------------------------------------------------------ replay record */

/* Memory is taken at once, but calloc's pages are only touched as entries
 * are used: a caller, which never checks requests, never touches them. */
static int replays_init(struct replays *r, uint32_t cap)
{
	r->cap = cap;
	for (r->nb = 1; r->nb < cap; r->nb <<= 1) {
	}
	r->e = calloc(cap, sizeof(*r->e));
	r->heap = calloc(cap, sizeof(*r->heap));
	r->bucket = calloc(r->nb, sizeof(*r->bucket));
	r->horizon_ms = INT64_MIN;
	randombytes_buf(r->key, sizeof(r->key));
	return r->e != NULL && r->heap != NULL && r->bucket != NULL ? 0 : -1;
}

static void replays_free(struct replays *r)
{
	free(r->e);
	free(r->heap);
	free(r->bucket);
}

static int64_t until_at(const struct replays *r, uint32_t pos)
{
	return r->e[r->heap[pos]].until_ms;
}

static void heap_swap(struct replays *r, uint32_t a, uint32_t b)
{
	uint32_t t = r->heap[a];

	r->heap[a] = r->heap[b];
	r->heap[b] = t;
}

static void sift_up(struct replays *r, uint32_t i)
{
	while (i > 0 && until_at(r, i) < until_at(r, (i - 1) / 2)) {
		heap_swap(r, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void sift_down(struct replays *r, uint32_t i)
{
	for (;;) {
		uint32_t least = i, c = 2 * i + 1;

		if (c < r->n && until_at(r, c) < until_at(r, least)) {
			least = c;
		}
		if (c + 1 < r->n && until_at(r, c + 1) < until_at(r, least)) {
			least = c + 1;
		}
		if (least == i) {
			return;
		}
		heap_swap(r, i, least);
		i = least;
	}
}

static bool replays_has(const struct replays *r, uint64_t h)
{
	for (uint32_t x = r->bucket[h & (r->nb - 1)]; x != 0; x = r->e[x - 1].next) {
		if (r->e[x - 1].hash == h) {
			return true;
		}
	}
	return false;
}

/* Forgets the entry whose window ends first; its until_ms. */
static int64_t replays_pop(struct replays *r)
{
	uint32_t idx = r->heap[0], *link = &r->bucket[r->e[idx].hash & (r->nb - 1)];
	int64_t until = r->e[idx].until_ms;

	while (*link != idx + 1) {
		link = &r->e[*link - 1].next;
	}
	*link = r->e[idx].next;
	if (--r->n > 0) {
		r->heap[0] = r->heap[r->n];
		sift_down(r, 0);
	}
	r->e[idx].next = r->free;
	r->free = idx + 1;
	return until;
}

static void replays_add(struct replays *r, uint64_t h, int64_t until)
{
	uint32_t idx, *head = &r->bucket[h & (r->nb - 1)];

	if (r->free != 0) {
		idx = r->free - 1;
		r->free = r->e[idx].next;
	} else {
		idx = r->used++;
	}
	r->e[idx] = (struct seen){.hash = h, .until_ms = until, .next = *head};
	*head = idx + 1;
	r->heap[r->n] = idx;
	sift_up(r, r->n++);
}

static void raise_horizon(struct replays *r, int64_t signed_at)
{
	if (signed_at > r->horizon_ms) {
		r->horizon_ms = signed_at;
	}
}

enum replay_verdict { REPLAY_FRESH, REPLAY_SEEN, REPLAY_TOO_OLD, REPLAY_STALE };

/* Records a signature until the end of its window (until), unless it was
 * seen already. An entry is dropped once its window has ended, and from
 * then on its signature is stale: time here is the record's own, which
 * never goes back, so that no thread with an earlier clock reading, nor a
 * clock set back, takes for fresh what was dropped as stale. When the
 * record is full, the entry whose window ends first (the new one, if it is
 * that one) is forgotten and the horizon rises to its signing time: from
 * then on a signature of that time or older is refused, so that forgetting
 * never lets a replay through. */
static enum replay_verdict replays_check(struct replays *r, uint64_t h, int64_t until,
                                         int64_t window, int64_t now, bool redelivered)
{
	if (now > r->now_ms) {
		r->now_ms = now;
	}
	if (until < r->now_ms) {
		return REPLAY_STALE;
	}
	while (r->n > 0 && until_at(r, 0) < r->now_ms) {
		replays_pop(r);
	}
	/* The broker's redelivery is the original message: taken, and recorded
	 * if it is not already (its worker may have died before recording it). */
	if (replays_has(r, h)) {
		return redelivered ? REPLAY_FRESH : REPLAY_SEEN;
	}
	if (until - window <= r->horizon_ms) {
		return redelivered ? REPLAY_FRESH : REPLAY_TOO_OLD;
	}
	if (r->n == r->cap) {
		if (until <= until_at(r, 0)) {
			raise_horizon(r, until - window); /* remembered by the horizon alone */
			return REPLAY_FRESH;
		}
		raise_horizon(r, replays_pop(r) - window);
	}
	replays_add(r, h, until);
	return REPLAY_FRESH;
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
	if (s == NULL ||
	    replays_init(&s->seen, (uint32_t)config_int(cfg, CFG_SECURITY_REPLAY_CACHE)) != 0 ||
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
	replays_free(&s->seen);
	free(s);
}

/* Direct reply-to names are rewritten by the broker on the way
 * ("amq.rabbitmq.reply-to.g1h2..."): the signature covers the name the
 * caller wrote. */
static const char *canonical_reply_to(const char *r)
{
	static const char direct[] = WIRE_DIRECT_REPLY_TO;

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

/* The signature headers of p, checked against the keyring: the key on
 * success, else NULL with why. */
static const struct sign_key *check_signature(const struct security *s,
                                              const amqp_basic_properties_t *p,
                                              struct sign_fields *f, char *why, size_t whylen)
{
	const amqp_field_value_t *id = wire_header(p, "rpc-key-id"),
	                         *at = wire_header(p, "rpc-signed-at"),
	                         *sig = wire_header(p, "rpc-signature");
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

/* Whether the request with signature sig (checked) is seen for the first
 * time within the window: WARREN_STATUS_OK and recorded; ALREADY_EXISTS
 * for a replay; UNAUTHENTICATED when it is older than what a full record
 * still remembers, or its window has ended by the record's clock. */
static int first_time(struct security *s, const struct sign_key *key, const amqp_field_value_t *sig,
                      const struct envelope_meta *m, int64_t signed_at, bool redelivered, char *why,
                      size_t whylen)
{
	crypto_generichash_state st;
	uint64_t h;
	int64_t now, horizon;
	enum replay_verdict v;

	/* A worker's retry carries the same signature: the attempt tells it apart. */
	crypto_generichash_init(&st, s->seen.key, sizeof(s->seen.key), sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)key->id, strlen(key->id) + 1);
	crypto_generichash_update(&st, sig->value.bytes.bytes, sig->value.bytes.len);
	crypto_generichash_update(&st, (const unsigned char *)&m->attempt, sizeof(m->attempt));
	crypto_generichash_final(&st, (unsigned char *)&h, sizeof(h));
	pthread_mutex_lock(&s->mu);
	v = replays_check(&s->seen, h, signed_at + s->window_ms, s->window_ms, warren_now_ms(),
	                  redelivered);
	now = s->seen.now_ms;
	horizon = s->seen.horizon_ms; /* INT64_MIN until the record first fills */
	pthread_mutex_unlock(&s->mu);
	if (v == REPLAY_SEEN) {
		snprintf(why, whylen, "replay of a request signed by key \"%s\" (message_id %s)",
		         key->id, m->message_id[0] != '\0' ? m->message_id : "none");
		return WARREN_STATUS_ALREADY_EXISTS;
	}
	if (v == REPLAY_STALE) {
		snprintf(why, whylen, "signed %lld ms away from now, outside security.window",
		         (long long)(now - signed_at));
		return WARREN_STATUS_UNAUTHENTICATED;
	}
	if (v == REPLAY_TOO_OLD) {
		snprintf(
		    why, whylen,
		    "signed %lld ms ago: the replay record is full (security.replay_cache) and "
		    "reaches back only %lld ms",
		    (long long)(now - signed_at), (long long)(now - horizon));
		return WARREN_STATUS_UNAUTHENTICATED;
	}
	return WARREN_STATUS_OK;
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
	const amqp_field_value_t *t = wire_header(p, SECURITY_RETRY_TOKEN);
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
	int st;

	*out = (struct checked){0};
	fields_of(m, false, 0, "", body, len, &f);
	key = check_signature(s, p, &f, why, whylen);
	if (key == NULL) {
		return WARREN_STATUS_UNAUTHENTICATED;
	}
	if (m->attempt > 1 && !retry_token_ok(s, p, key->id, m)) {
		snprintf(why, whylen, "attempt %d of message_id %s without a valid %s", m->attempt,
		         m->message_id, SECURITY_RETRY_TOKEN);
		return WARREN_STATUS_UNAUTHENTICATED;
	}
	st = first_time(s, key, wire_header(p, "rpc-signature"), m, f.signed_at_ms, redelivered,
	                why, whylen);
	if (st != WARREN_STATUS_OK) {
		return st;
	}
	/* Signed by key, within the window, and not seen before: its reply_to
	 * and correlation id are its signer's, and a refusal may be answered. */
	out->authentic = true;
	snprintf(out->signer, sizeof(out->signer), "%s", key->id);
	if (!allowed(s, m->method, key->id)) {
		snprintf(why, whylen, "key \"%s\" may not call %s", key->id, m->method);
		return WARREN_STATUS_PERMISSION_DENIED;
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
