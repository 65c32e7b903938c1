/* forward.h: a request republished as it came but for some headers: to the
 * dead-letter exchange with why (deadletter.h), or to a delay tier to be
 * tried again. The broker's own bookkeeping headers (x-death...,
 * x-delivery-count) and the replaced ones are left out. */
#ifndef WARREN_FORWARD_H
#define WARREN_FORWARD_H

#include <amqp.h>

#include "warren.h"

#define FORWARD_MAX_ADD 8

struct forward {
	amqp_basic_properties_t props; /* points into orig and into this struct */
	amqp_table_entry_t *entries;   /* malloc'd */
	char expiration[24];
};

/* Fills f from orig, replacing or adding the nadd headers of add (their
 * keys and values must outlive the publish). false when out of memory. */
bool forward_props(struct forward *f, const amqp_basic_properties_t *orig,
                   const amqp_table_entry_t *add, int nadd);
/* Sets the per-message TTL (the expiration property) to ms. */
void forward_expire_after(struct forward *f, int64_t ms);
void forward_free(struct forward *f);

/* Helpers to fill add[]. */
amqp_table_entry_t forward_str(const char *key, const char *value);
amqp_table_entry_t forward_int(const char *key, int64_t value);
amqp_table_entry_t forward_bytes(const char *key, const void *value, size_t len);

#endif
