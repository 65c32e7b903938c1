/* value.c: the warren_value tree: constructors, containers, accessors, copy
 * and equality. Maps keep insertion order and grow a hash index once they
 * are large, so decoding a hostile body with many keys stays linear. */
#include "value_int.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Maps up to this many entries are searched linearly. */
#define MAP_LINEAR_MAX 8

static warren_value *value_new(warren_type t)
{
	warren_value *v = calloc(1, sizeof(*v));

	if (v != NULL) {
		v->type = t;
	}
	return v;
}

warren_value *warren_nil(void)
{
	return value_new(WARREN_NIL);
}

warren_value *warren_bool(bool b)
{
	warren_value *v = value_new(WARREN_BOOL);

	if (v != NULL) {
		v->u.b = b;
	}
	return v;
}

warren_value *warren_int(int64_t i)
{
	warren_value *v = value_new(WARREN_INT);

	if (v != NULL) {
		v->u.i = i;
	}
	return v;
}

warren_value *warren_float(double d)
{
	warren_value *v = value_new(WARREN_FLOAT);

	if (v != NULL) {
		v->u.d = d;
	}
	return v;
}

/* A STR or BIN holding a NUL-terminated copy of len bytes. */
static warren_value *bytes_new(warren_type t, const void *p, size_t len)
{
	warren_value *v;

	if (p == NULL && len > 0) {
		return NULL;
	}
	v = value_new(t);
	if (v == NULL) {
		return NULL;
	}
	v->u.s.p = malloc(len + 1);
	if (v->u.s.p == NULL) {
		free(v);
		return NULL;
	}
	if (len > 0) {
		memcpy(v->u.s.p, p, len);
	}
	v->u.s.p[len] = '\0';
	v->u.s.len = len;
	return v;
}

warren_value *warren_str(const char *s)
{
	return s != NULL ? bytes_new(WARREN_STR, s, strlen(s)) : NULL;
}

warren_value *warren_strn(const char *s, size_t len)
{
	return bytes_new(WARREN_STR, s, len);
}

warren_value *warren_bin(const void *p, size_t len)
{
	return bytes_new(WARREN_BIN, p, len);
}

warren_value *value_bin_borrowed(const void *p, size_t len)
{
	warren_value *v;

	if (p == NULL && len > 0) {
		return NULL;
	}
	v = value_new(WARREN_BIN);
	if (v != NULL) {
		v->u.s.p = (char *)p; /* never written through: BIN has no setter */
		v->u.s.len = len;
		v->u.s.borrowed = true;
	}
	return v;
}

warren_value *warren_array(void)
{
	return value_new(WARREN_ARRAY);
}

warren_value *warren_map(void)
{
	return value_new(WARREN_MAP);
}

/* Grows *items (of size elem each) so that it holds at least need. */
static bool grow(void **items, size_t *cap, size_t need, size_t elem)
{
	size_t n = *cap != 0 ? *cap : 4;
	void *p;

	if (need <= *cap) {
		return true;
	}
	while (n < need) {
		if (n > SIZE_MAX / 2 / elem) {
			return false;
		}
		n *= 2;
	}
	p = realloc(*items, n * elem);
	if (p == NULL) {
		return false;
	}
	*items = p;
	*cap = n;
	return true;
}

warren_err value_reserve(warren_value *v, size_t n)
{
	if (v->type == WARREN_ARRAY) {
		return grow((void **)&v->u.a.items, &v->u.a.cap, n, sizeof(*v->u.a.items))
		           ? WARREN_OK
		           : WARREN_ERR_NOMEM;
	}
	if (v->type == WARREN_MAP) {
		return grow((void **)&v->u.m.e, &v->u.m.cap, n, sizeof(*v->u.m.e))
		           ? WARREN_OK
		           : WARREN_ERR_NOMEM;
	}
	return WARREN_ERR_INVALID;
}

warren_value *value_container(warren_type t, size_t n)
{
	warren_value *c = t == WARREN_ARRAY ? warren_array() : warren_map();

	if (c == NULL || value_reserve(c, n) != WARREN_OK) {
		warren_value_free(c);
		return NULL;
	}
	return c;
}

warren_err warren_array_push(warren_value *arr, warren_value *item)
{
	if (item == NULL) {
		return WARREN_ERR_NOMEM;
	}
	if (arr == NULL || arr->type != WARREN_ARRAY) {
		warren_value_free(item);
		return WARREN_ERR_INVALID;
	}
	if (value_reserve(arr, arr->u.a.len + 1) != WARREN_OK) {
		warren_value_free(item);
		return WARREN_ERR_NOMEM;
	}
	arr->u.a.items[arr->u.a.len++] = item;
	return WARREN_OK;
}

/* ------------------------------------------------------------ map index */

/* The index hashes keys with SipHash-2-4 under a key drawn once per process:
 * a sender who cannot learn it cannot choose keys that share a slot, which an
 * unkeyed hash (FNV-1a before issue 13) let a 1 MiB body do to stall a
 * handler thread for minutes inside decoding. A forked child keeps the key:
 * the maps it inherits were indexed with it. */
static unsigned char hash_key[crypto_shorthash_KEYBYTES];
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;

static void hash_key_init(void)
{
	/* Idempotent and thread-safe; a library user may decode before any
	 * engine exists. randombytes_buf seeds itself even if it failed. */
	if (sodium_init() < 0) {
		randombytes_stir();
	}
	randombytes_buf(hash_key, sizeof(hash_key));
}

static uint64_t key_hash(const char *k, size_t len)
{
	unsigned char out[crypto_shorthash_BYTES];
	uint64_t h;

	pthread_once(&hash_once, hash_key_init);
	crypto_shorthash(out, (const unsigned char *)k, len, hash_key);
	memcpy(&h, out, sizeof(h));
	return h;
}

/* Slots hold entry index + 1; 0 is empty. The table is at most half full. */
static void index_insert(struct value_map *m, size_t entry)
{
	size_t mask = m->index_cap - 1;
	size_t slot = key_hash(m->e[entry].key, m->e[entry].klen) & mask;

	while (m->index[slot] != 0) {
		slot = (slot + 1) & mask;
	}
	m->index[slot] = entry + 1;
}

static bool index_rebuild(struct value_map *m, size_t want)
{
	size_t cap = 16;
	size_t *idx;

	while (cap < want * 2) {
		cap *= 2;
	}
	idx = calloc(cap, sizeof(*idx));
	if (idx == NULL) {
		return false;
	}
	free(m->index);
	m->index = idx;
	m->index_cap = cap;
	for (size_t i = 0; i < m->len; i++) {
		index_insert(m, i);
	}
	return true;
}

/* The entry of key, or -1. */
static ptrdiff_t map_find(const struct value_map *m, const char *key, size_t klen)
{
	if (m->index == NULL) {
		for (size_t i = 0; i < m->len; i++) {
			if (m->e[i].klen == klen && memcmp(m->e[i].key, key, klen) == 0) {
				return (ptrdiff_t)i;
			}
		}
		return -1;
	}
	size_t mask = m->index_cap - 1;
	for (size_t slot = key_hash(key, klen) & mask; m->index[slot] != 0;
	     slot = (slot + 1) & mask) {
		const struct value_entry *e = &m->e[m->index[slot] - 1];
		if (e->klen == klen && memcmp(e->key, key, klen) == 0) {
			return (ptrdiff_t)(m->index[slot] - 1);
		}
	}
	return -1;
}

/* Keeps the hash index in step with the entry just appended, once the map
 * is past linear search. */
static void index_appended(struct value_map *m)
{
	if (m->len <= MAP_LINEAR_MAX) {
		return;
	}
	if (m->index != NULL && m->len * 2 <= m->index_cap) {
		index_insert(m, m->len - 1);
	} else if (!index_rebuild(m, m->len)) {
		/* Fall back to linear search rather than fail. */
		free(m->index);
		m->index = NULL;
		m->index_cap = 0;
	}
}

warren_err value_map_add(warren_value *map, const char *key, size_t klen, warren_value *val,
                         bool replace)
{
	struct value_map *m;
	ptrdiff_t at;
	char *k;

	if (val == NULL) {
		return WARREN_ERR_NOMEM;
	}
	if (map == NULL || map->type != WARREN_MAP || key == NULL) {
		warren_value_free(val);
		return WARREN_ERR_INVALID;
	}
	m = &map->u.m;
	at = map_find(m, key, klen);
	if (at >= 0) {
		if (!replace) {
			warren_value_free(val);
			return WARREN_ERR_INVALID; /* duplicate key */
		}
		warren_value_free(m->e[at].val);
		m->e[at].val = val;
		return WARREN_OK;
	}
	k = malloc(klen + 1);
	if (k == NULL || value_reserve(map, m->len + 1) != WARREN_OK) {
		free(k);
		warren_value_free(val);
		return WARREN_ERR_NOMEM;
	}
	memcpy(k, key, klen);
	k[klen] = '\0';
	m->e[m->len] = (struct value_entry){.key = k, .klen = klen, .val = val};
	m->len++;
	index_appended(m);
	return WARREN_OK;
}

warren_err warren_map_set(warren_value *map, const char *key, warren_value *val)
{
	if (key == NULL) {
		warren_value_free(val);
		return val != NULL ? WARREN_ERR_INVALID : WARREN_ERR_NOMEM;
	}
	return value_map_add(map, key, strlen(key), val, true);
}

/* ------------------------------------------------------ free, copy, equal */

void warren_value_free(warren_value *v)
{
	if (v == NULL) {
		return;
	}
	switch (v->type) {
	case WARREN_STR:
	case WARREN_BIN:
		if (!v->u.s.borrowed) {
			free(v->u.s.p);
		}
		break;
	case WARREN_ARRAY:
		for (size_t i = 0; i < v->u.a.len; i++) {
			warren_value_free(v->u.a.items[i]);
		}
		free(v->u.a.items);
		break;
	case WARREN_MAP:
		for (size_t i = 0; i < v->u.m.len; i++) {
			free(v->u.m.e[i].key);
			warren_value_free(v->u.m.e[i].val);
		}
		free(v->u.m.e);
		free(v->u.m.index);
		break;
	default:
		break;
	}
	free(v);
}

warren_value *warren_value_copy(const warren_value *v)
{
	warren_value *c;

	if (v == NULL) {
		return NULL;
	}
	switch (v->type) {
	case WARREN_STR:
	case WARREN_BIN:
		return bytes_new(v->type, v->u.s.p, v->u.s.len);
	case WARREN_ARRAY:
		c = value_container(WARREN_ARRAY, v->u.a.len);
		if (c == NULL) {
			return NULL;
		}
		for (size_t i = 0; i < v->u.a.len; i++) {
			if (warren_array_push(c, warren_value_copy(v->u.a.items[i])) != WARREN_OK) {
				warren_value_free(c);
				return NULL;
			}
		}
		return c;
	case WARREN_MAP:
		c = value_container(WARREN_MAP, v->u.m.len);
		if (c == NULL) {
			return NULL;
		}
		for (size_t i = 0; i < v->u.m.len; i++) {
			const struct value_entry *e = &v->u.m.e[i];
			if (value_map_add(c, e->key, e->klen, warren_value_copy(e->val), false) !=
			    WARREN_OK) {
				warren_value_free(c);
				return NULL;
			}
		}
		return c;
	default:
		c = value_new(v->type);
		if (c != NULL) {
			c->u = v->u;
		}
		return c;
	}
}

static bool arrays_equal(const warren_value *a, const warren_value *b)
{
	if (a->u.a.len != b->u.a.len) {
		return false;
	}
	for (size_t i = 0; i < a->u.a.len; i++) {
		if (!warren_value_equal(a->u.a.items[i], b->u.a.items[i])) {
			return false;
		}
	}
	return true;
}

/* Same keys and values; order does not matter. */
static bool maps_equal(const warren_value *a, const warren_value *b)
{
	if (a->u.m.len != b->u.m.len) {
		return false;
	}
	for (size_t i = 0; i < a->u.m.len; i++) {
		const struct value_entry *e = &a->u.m.e[i];
		ptrdiff_t j = map_find(&b->u.m, e->key, e->klen);
		if (j < 0 || !warren_value_equal(e->val, b->u.m.e[j].val)) {
			return false;
		}
	}
	return true;
}

bool warren_value_equal(const warren_value *a, const warren_value *b)
{
	if (warren_value_type(a) != warren_value_type(b)) {
		return false;
	}
	if (a == NULL || b == NULL) {
		return true; /* both nil */
	}
	switch (a->type) {
	case WARREN_NIL:
		return true;
	case WARREN_BOOL:
		return a->u.b == b->u.b;
	case WARREN_INT:
		return a->u.i == b->u.i;
	case WARREN_FLOAT:
		/* Bitwise-equal NaNs are equal, so a round trip compares equal. */
		return a->u.d == b->u.d || (isnan(a->u.d) && isnan(b->u.d));
	case WARREN_STR:
	case WARREN_BIN:
		return a->u.s.len == b->u.s.len && memcmp(a->u.s.p, b->u.s.p, a->u.s.len) == 0;
	case WARREN_ARRAY:
		return arrays_equal(a, b);
	case WARREN_MAP:
		return maps_equal(a, b);
	}
	return false;
}

/* ------------------------------------------------------------- accessors */

warren_type warren_value_type(const warren_value *v)
{
	return v != NULL ? v->type : WARREN_NIL;
}

const char *warren_type_name(warren_type t)
{
	static const char *const names[] = {"nil",    "boolean", "integer", "float",
	                                    "string", "binary",  "array",   "map"};

	return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

bool warren_value_get_bool(const warren_value *v, bool *out)
{
	if (v == NULL || v->type != WARREN_BOOL) {
		return false;
	}
	*out = v->u.b;
	return true;
}

bool warren_value_get_int(const warren_value *v, int64_t *out)
{
	if (v == NULL || v->type != WARREN_INT) {
		return false;
	}
	*out = v->u.i;
	return true;
}

bool warren_value_get_float(const warren_value *v, double *out)
{
	if (v != NULL && v->type == WARREN_FLOAT) {
		*out = v->u.d;
		return true;
	}
	if (v != NULL && v->type == WARREN_INT) {
		*out = (double)v->u.i;
		return true;
	}
	return false;
}

static bool get_bytes(const warren_value *v, warren_type t, const char **out, size_t *len)
{
	if (v == NULL || v->type != t) {
		return false;
	}
	*out = v->u.s.p;
	if (len != NULL) {
		*len = v->u.s.len;
	}
	return true;
}

bool warren_value_get_str(const warren_value *v, const char **out, size_t *len)
{
	return get_bytes(v, WARREN_STR, out, len);
}

bool warren_value_get_bin(const warren_value *v, const void **out, size_t *len)
{
	const char *p;

	if (!get_bytes(v, WARREN_BIN, &p, len)) {
		return false;
	}
	*out = p;
	return true;
}

size_t warren_value_len(const warren_value *v)
{
	if (v != NULL && v->type == WARREN_ARRAY) {
		return v->u.a.len;
	}
	if (v != NULL && v->type == WARREN_MAP) {
		return v->u.m.len;
	}
	return 0;
}

const warren_value *warren_array_at(const warren_value *arr, size_t i)
{
	if (arr == NULL || arr->type != WARREN_ARRAY || i >= arr->u.a.len) {
		return NULL;
	}
	return arr->u.a.items[i];
}

const warren_value *warren_map_get(const warren_value *map, const char *key)
{
	ptrdiff_t at;

	if (map == NULL || map->type != WARREN_MAP || key == NULL) {
		return NULL;
	}
	at = map_find(&map->u.m, key, strlen(key));
	return at >= 0 ? map->u.m.e[at].val : NULL;
}

bool warren_map_at(const warren_value *map, size_t i, const char **key, const warren_value **val)
{
	if (map == NULL || map->type != WARREN_MAP || i >= map->u.m.len) {
		return false;
	}
	if (key != NULL) {
		*key = map->u.m.e[i].key;
	}
	if (val != NULL) {
		*val = map->u.m.e[i].val;
	}
	return true;
}

size_t value_map_key_len(const warren_value *map, size_t i)
{
	return map->u.m.e[i].klen;
}
