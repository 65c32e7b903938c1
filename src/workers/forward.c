/* forward.c: properties for republishing a delivered request. */
#include "forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool key_is(amqp_bytes_t k, const char *s)
{
	size_t n = strlen(s);

	return k.len == n && memcmp(k.bytes, s, n) == 0;
}

static bool key_starts(amqp_bytes_t k, const char *prefix)
{
	size_t n = strlen(prefix);

	return k.len >= n && memcmp(k.bytes, prefix, n) == 0;
}

/* Headers the broker writes about a message's past, which must not travel
 * with a republished copy, and the ones about to be replaced. */
static bool dropped(amqp_bytes_t k, const amqp_table_entry_t *add, int nadd)
{
	if (key_is(k, "x-death") || key_starts(k, "x-first-death-") ||
	    key_starts(k, "x-last-death-") || key_is(k, "x-delivery-count")) {
		return true;
	}
	for (int i = 0; i < nadd; i++) {
		if (k.len == add[i].key.len && memcmp(k.bytes, add[i].key.bytes, k.len) == 0) {
			return true;
		}
	}
	return false;
}

bool forward_props(struct forward *f, const amqp_basic_properties_t *orig,
                   const amqp_table_entry_t *add, int nadd)
{
	int n = 0, have = (orig->_flags & AMQP_BASIC_HEADERS_FLAG) ? orig->headers.num_entries : 0;

	memset(f, 0, sizeof(*f));
	f->props = *orig;
	f->entries = malloc(sizeof(*f->entries) * (size_t)(have + nadd + 1));
	if (f->entries == NULL) {
		return false;
	}
	for (int i = 0; i < have; i++) {
		if (!dropped(orig->headers.entries[i].key, add, nadd)) {
			f->entries[n++] = orig->headers.entries[i];
		}
	}
	for (int i = 0; i < nadd; i++) {
		f->entries[n++] = add[i];
	}
	f->props._flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
	f->props._flags &= ~AMQP_BASIC_EXPIRATION_FLAG;
	f->props.headers = (amqp_table_t){.num_entries = n, .entries = f->entries};
	f->props.delivery_mode = 2;
	return true;
}

void forward_expire_after(struct forward *f, int64_t ms)
{
	snprintf(f->expiration, sizeof(f->expiration), "%lld", (long long)(ms > 0 ? ms : 0));
	f->props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
	f->props.expiration = amqp_cstring_bytes(f->expiration);
}

void forward_free(struct forward *f)
{
	free(f->entries);
	f->entries = NULL;
}

amqp_table_entry_t forward_str(const char *key, const char *value)
{
	return (amqp_table_entry_t){.key = amqp_cstring_bytes(key),
	                            .value = {.kind = AMQP_FIELD_KIND_UTF8,
	                                      .value.bytes = amqp_cstring_bytes(value)}};
}

amqp_table_entry_t forward_bytes(const char *key, const void *value, size_t len)
{
	return (amqp_table_entry_t){
	    .key = amqp_cstring_bytes(key),
	    .value = {.kind = AMQP_FIELD_KIND_BYTES,
	              .value.bytes = (amqp_bytes_t){.len = len, .bytes = (void *)value}}};
}

amqp_table_entry_t forward_int(const char *key, int64_t value)
{
	return (amqp_table_entry_t){.key = amqp_cstring_bytes(key),
	                            .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = value}};
}
