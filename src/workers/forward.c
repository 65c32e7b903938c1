/* forward.c: properties for republishing a delivered request. */
#include "forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

struct added {
	const amqp_table_entry_t *add;
	int nadd;
};

/* The headers about to be replaced (wire_props_copy leaves out the
 * broker's history, which must not travel with a republished copy). */
static bool replaced(amqp_bytes_t k, const void *arg)
{
	const struct added *a = arg;

	for (int i = 0; i < a->nadd; i++) {
		if (k.len == a->add[i].key.len &&
		    memcmp(k.bytes, a->add[i].key.bytes, k.len) == 0) {
			return true;
		}
	}
	return false;
}

bool forward_props(struct forward *f, const amqp_basic_properties_t *orig,
                   const amqp_table_entry_t *add, int nadd)
{
	struct added a = {add, nadd};
	int n;

	memset(f, 0, sizeof(*f));
	f->props = *orig;
	f->entries = malloc(sizeof(*f->entries) * (size_t)(wire_header_count(orig) + nadd + 1));
	if (f->entries == NULL) {
		return false;
	}
	n = wire_props_copy(&f->props, orig, f->entries, replaced, &a);
	for (int i = 0; i < nadd; i++) {
		f->entries[n++] = add[i];
	}
	f->props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
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
	return (amqp_table_entry_t){
	    .key = amqp_cstring_bytes(key),
	    .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(value)}};
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
