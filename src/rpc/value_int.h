/* value_int.h: the layout of warren_value, shared by value.c and the codecs
 * (value_json.c, codec_msgpack.c), which build and walk trees directly. */
#ifndef WARREN_VALUE_INT_H
#define WARREN_VALUE_INT_H

#include "warren.h"

#include <stddef.h>

struct value_entry {
	char *key; /* NUL-terminated copy; klen bytes without NUL inside */
	size_t klen;
	warren_value *val;
};

struct value_map {
	struct value_entry *e; /* insertion order */
	size_t len, cap;
	size_t *index; /* open addressing, entry index + 1; NULL while small */
	size_t index_cap;
};

struct warren_value {
	warren_type type;
	union {
		bool b;
		int64_t i;
		double d;
		struct {
			char *p; /* len bytes, then a NUL unless borrowed */
			size_t len;
			bool borrowed; /* BIN only: p points into a buffer not ours */
		} s;
		struct {
			warren_value **items;
			size_t len, cap;
		} a;
		struct value_map m;
	} u;
};

/* A BIN whose bytes stay where they are: p must outlive the value, which
 * never frees it (warren_value_copy makes an owned copy). No NUL follows
 * the bytes, which is why strings are never borrowed. */
warren_value *value_bin_borrowed(const void *p, size_t len);

/* Makes room for n items (array) or entries (map) in all. */
warren_err value_reserve(warren_value *v, size_t n);

/* A new empty array or map (t) with room for n items or entries, so that
 * filling it does not grow it; NULL when out of memory. */
warren_value *value_container(warren_type t, size_t n);

/* Adds key (klen bytes) -> val to map, taking val also on failure. An
 * existing key is replaced when replace is true and otherwise refused with
 * WARREN_ERR_INVALID. */
warren_err value_map_add(warren_value *map, const char *key, size_t klen, warren_value *val,
                         bool replace);

/* The byte length of the i-th key of map (i must be in range). */
size_t value_map_key_len(const warren_value *map, size_t i);

#endif
