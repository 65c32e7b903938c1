/* pending.h: the correlation table. Indexes in-flight calls by correlation id
 * (hash) and by deadline (binary min-heap), in memory fixed at init: inserting
 * never allocates. Entries are embedded in the caller's own structs.
 * Not thread-safe: only the client's I/O thread touches it. */
#ifndef WARREN_PENDING_H
#define WARREN_PENDING_H

#include <stddef.h>
#include <stdint.h>

#define PENDING_ID_MAX 64 /* longest correlation id, without the NUL */

struct pending_entry {
	char id[PENDING_ID_MAX + 1]; /* correlation id, NUL-terminated; set before insert */
	size_t id_len;
	int64_t deadline;            /* monotonic ms; set before insert */
	/* Owned by the table while inserted: */
	struct pending_entry *hnext; /* hash chain */
	size_t heap_index;
};

struct pending {
	struct pending_entry **buckets;
	size_t nbuckets; /* power of two */
	struct pending_entry **heap;
	size_t count, capacity;
};

/* 0, or -1 when out of memory. capacity >= 1. */
int pending_init(struct pending *t, size_t capacity);
/* Frees the table's own memory; entries are the caller's. */
void pending_destroy(struct pending *t);
/* 0; -1 when full; -2 when the id is already present. */
int pending_insert(struct pending *t, struct pending_entry *e);
struct pending_entry *pending_find(const struct pending *t, const char *id, size_t len);
/* e must be in the table. */
void pending_remove(struct pending *t, struct pending_entry *e);
/* The entry with the earliest deadline, or NULL when empty. */
struct pending_entry *pending_first(const struct pending *t);
/* Removes and returns an entry whose deadline <= now, earliest first; NULL if none. */
struct pending_entry *pending_pop_expired(struct pending *t, int64_t now);
size_t pending_count(const struct pending *t);
/* Calls fn for every entry, in no particular order; fn must not change t. */
void pending_each(const struct pending *t, void (*fn)(struct pending_entry *e, void *arg),
                  void *arg);

#endif
