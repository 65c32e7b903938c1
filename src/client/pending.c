/* pending.c: the client's correlation table. A chained hash finds a call by
 * the correlation id of its reply; a binary min-heap on deadline finds the next
 * call to time out. Both live in arrays sized once at init, so no call allocates. */
#include "pending.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Stamped into heap_index of an entry that left the table, so a stale use
 * shows up as an out-of-range index rather than as a plausible one. */
#define NOT_IN_HEAP SIZE_MAX

/* FNV-1a over the whole id, then a final avalanche: the id's first 16
 * characters are the same for every call of a client, and a mask keeps only
 * the low bits, so those bits must depend on every byte. Ids are ours, never
 * a peer's choice, so there is no flooding to defend against with a seed. */
static size_t hash_id(const char *id, size_t len)
{
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)id[i];
		h *= 1099511628211ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (size_t)h;
}

static struct pending_entry **bucket_of(const struct pending *t, const char *id, size_t len)
{
	return &t->buckets[hash_id(id, len) & (t->nbuckets - 1)];
}

/* The smallest power of two >= n, or 0 when that does not fit in a size_t. */
static size_t round_up_pow2(size_t n)
{
	size_t p = 1;

	while (p < n) {
		if (p > SIZE_MAX / 2) {
			return 0;
		}
		p *= 2;
	}
	return p;
}

int pending_init(struct pending *t, size_t capacity)
{
	memset(t, 0, sizeof(*t));
	if (capacity == 0) {
		return -1;
	}
	t->nbuckets = round_up_pow2(capacity);
	if (t->nbuckets == 0) {
		return -1;
	}
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	t->heap = calloc(capacity, sizeof(*t->heap));
	if (t->buckets == NULL || t->heap == NULL) {
		pending_destroy(t);
		return -1;
	}
	t->capacity = capacity;
	return 0;
}

void pending_destroy(struct pending *t)
{
	if (t == NULL) {
		return;
	}
	free(t->buckets);
	free(t->heap);
	memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------ heap */

static void heap_place(struct pending *t, size_t i, struct pending_entry *e)
{
	t->heap[i] = e;
	e->heap_index = i;
}

/* Moves the entry at i towards the root while it is due before its parent. */
static void sift_up(struct pending *t, size_t i)
{
	struct pending_entry *e = t->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (t->heap[parent]->deadline <= e->deadline) {
			break;
		}
		heap_place(t, i, t->heap[parent]);
		i = parent;
	}
	heap_place(t, i, e);
}

/* Moves the entry at i towards the leaves while a child is due before it. */
static void sift_down(struct pending *t, size_t i)
{
	struct pending_entry *e = t->heap[i];

	for (;;) {
		size_t child = 2 * i + 1;

		if (child >= t->count) {
			break;
		}
		if (child + 1 < t->count &&
		    t->heap[child + 1]->deadline < t->heap[child]->deadline) {
			child++;
		}
		if (e->deadline <= t->heap[child]->deadline) {
			break;
		}
		heap_place(t, i, t->heap[child]);
		i = child;
	}
	heap_place(t, i, e);
}

/* Fills the hole at i with the last entry, which may belong above or below it. */
static void heap_delete(struct pending *t, size_t i)
{
	struct pending_entry *last = t->heap[--t->count];

	t->heap[t->count] = NULL;
	if (i == t->count) {
		return;
	}
	heap_place(t, i, last);
	if (i > 0 && t->heap[(i - 1) / 2]->deadline > last->deadline) {
		sift_up(t, i);
	} else {
		sift_down(t, i);
	}
}

/* ------------------------------------------------------------ hash */

static void hash_unlink(struct pending *t, struct pending_entry *e)
{
	struct pending_entry **link = bucket_of(t, e->id, e->id_len);

	while (*link != e) {
		assert(*link != NULL); /* e was not in the table */
		link = &(*link)->hnext;
	}
	*link = e->hnext;
	e->hnext = NULL;
}

/* ------------------------------------------------------------ interface */

int pending_insert(struct pending *t, struct pending_entry *e)
{
	struct pending_entry **bucket;

	assert(e->id_len <= PENDING_ID_MAX);
	if (t->count == t->capacity) {
		return -1;
	}
	if (pending_find(t, e->id, e->id_len) != NULL) {
		return -2;
	}
	bucket = bucket_of(t, e->id, e->id_len);
	e->hnext = *bucket;
	*bucket = e;
	heap_place(t, t->count++, e);
	sift_up(t, e->heap_index);
	return 0;
}

struct pending_entry *pending_find(const struct pending *t, const char *id, size_t len)
{
	struct pending_entry *e;

	if (len > PENDING_ID_MAX || t->count == 0) {
		return NULL;
	}
	for (e = *bucket_of(t, id, len); e != NULL; e = e->hnext) {
		if (e->id_len == len && memcmp(e->id, id, len) == 0) {
			return e;
		}
	}
	return NULL;
}

void pending_remove(struct pending *t, struct pending_entry *e)
{
	assert(e->heap_index < t->count && t->heap[e->heap_index] == e);
	hash_unlink(t, e);
	heap_delete(t, e->heap_index);
	e->heap_index = NOT_IN_HEAP;
}

struct pending_entry *pending_first(const struct pending *t)
{
	return t->count > 0 ? t->heap[0] : NULL;
}

struct pending_entry *pending_pop_expired(struct pending *t, int64_t now)
{
	struct pending_entry *e = pending_first(t);

	if (e == NULL || e->deadline > now) {
		return NULL;
	}
	pending_remove(t, e);
	return e;
}

size_t pending_count(const struct pending *t)
{
	return t->count;
}

void pending_each(const struct pending *t, void (*fn)(struct pending_entry *e, void *arg),
                  void *arg)
{
	for (size_t i = 0; i < t->count; i++) {
		fn(t->heap[i], arg);
	}
}
