/* wire_headers.c: reading AMQP headers, and copying a message's properties
 * without the headers the broker wrote about its past (wire.h). */
#include "wire.h"

#include <string.h>

const amqp_field_value_t *wire_header_find(const amqp_table_t *t, const char *key)
{
	size_t klen = strlen(key);

	for (int i = 0; t != NULL && i < t->num_entries; i++) {
		const amqp_table_entry_t *e = &t->entries[i];

		if (e->key.len == klen && (klen == 0 || memcmp(e->key.bytes, key, klen) == 0)) {
			return &e->value;
		}
	}
	return NULL;
}

const amqp_field_value_t *wire_header(const amqp_basic_properties_t *p, const char *key)
{
	if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG)) {
		return NULL;
	}
	return wire_header_find(&p->headers, key);
}

bool wire_key_is(amqp_bytes_t key, const char *s)
{
	size_t n = strlen(s);

	return key.len == n && (n == 0 || memcmp(key.bytes, s, n) == 0);
}

bool wire_key_starts(amqp_bytes_t key, const char *prefix)
{
	size_t n = strlen(prefix);

	return key.len >= n && (n == 0 || memcmp(key.bytes, prefix, n) == 0);
}

bool wire_history_header(amqp_bytes_t key)
{
	return wire_key_is(key, WIRE_H_DEATH) || wire_key_starts(key, WIRE_H_FIRST_DEATH) ||
	       wire_key_starts(key, WIRE_H_LAST_DEATH) || wire_key_is(key, WIRE_H_DELIVERY_COUNT);
}

int wire_header_count(const amqp_basic_properties_t *p)
{
	return (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? p->headers.num_entries : 0;
}

int wire_props_copy(amqp_basic_properties_t *out, const amqp_basic_properties_t *orig,
                    amqp_table_entry_t *entries, bool (*drop)(amqp_bytes_t key, const void *arg),
                    const void *arg)
{
	int have = wire_header_count(orig), kept = 0;

	*out = *orig;
	for (int i = 0; i < have; i++) {
		amqp_bytes_t k = orig->headers.entries[i].key;

		if (!wire_history_header(k) && (drop == NULL || !drop(k, arg))) {
			entries[kept++] = orig->headers.entries[i];
		}
	}
	out->_flags |= AMQP_BASIC_HEADERS_FLAG;
	out->headers = (amqp_table_t){.num_entries = kept, .entries = entries};
	return kept;
}
