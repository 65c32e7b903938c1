/* dlq_letter.h: a dead letter (deadletter.h) as rpc-dlq sees it: the
 * summary that list prints and the filters match, read leniently so that a
 * malformed dead letter is still shown with what is known; the properties
 * of its replay; and the text helpers that keep message data from
 * reaching a terminal raw. */
#ifndef WARREN_DLQ_LETTER_H
#define WARREN_DLQ_LETTER_H

#include <amqp.h>
#include <amqp_framing.h>

#include "warren.h"

#define DLQ_UNKNOWN "?"

struct dlq_letter {
	char method[256];         /* printable: type, else the routing key; "?" */
	char route[256];          /* the method as a routing key, raw; "" when unknown */
	char reason[300];         /* rpc-dead-reason, "broker:<x-first-death-reason>", or "?" */
	char error[1024];         /* rpc-dead-error, or where the broker took it from; "" */
	char correlation_id[256]; /* printable; "?" when absent */
	int64_t time_ms;          /* when it died, Unix ms; 0 when unknown */
	int64_t attempts;         /* rpc-attempt; -1 when unknown */
	char notes[1024];         /* what is malformed, "; "-separated; "" when nothing */
};

/* Reads p. routing_key is the one it was delivered with, queue the DLQ it
 * was taken from (a routing key equal to it names no method). Never fails:
 * what cannot be read is "?" and explained in notes. */
void dlq_letter_read(const amqp_basic_properties_t *p, const char *routing_key, const char *queue,
                     struct dlq_letter *out);

/* The name of an AMQP field kind, as export writes it in "$type" ("string",
 * "int32", "timestamp"...); "kind-0xNN" for one rabbitmq-c does not know. */
const char *dlq_kind_name(uint8_t kind);

/* What list, replay, purge and export select. All given conditions must hold. */
struct dlq_filter {
	const char *method;    /* exact, or a prefix when it ends in '*'; NULL: any */
	const char *reason;    /* the same, against the shown reason */
	int64_t older_than_ms; /* dead at least this long ago; -1: no condition */
	int64_t newer_than_ms; /* dead less than this long ago; -1: no condition */
};

#define DLQ_FILTER_NONE                                                                            \
	{                                                                                          \
		NULL, NULL, -1, -1                                                                 \
	}

/* A dead letter whose time is unknown matches no time condition. */
bool dlq_filter_match(const struct dlq_filter *f, const struct dlq_letter *l, int64_t now_ms);

/* "250ms", "30s", "5m", "2h", "4d", fractions allowed ("1.5h"), or a bare
 * number of seconds; 0 to 3650 days. false for anything else. */
bool dlq_parse_duration(const char *text, int64_t *ms);
/* "3s", "5m", "2h", "4d": the largest unit that fits, rounded down. */
void dlq_format_age(int64_t age_ms, char *buf, size_t cap);

/* The properties of a replay: the dead letter's own, without reply_to (the
 * caller is gone) and without the headers of its death and of its old
 * delivery (rpc-dead-*, x-death, x-first-death-*, x-last-death-*,
 * x-delivery-count), rpc-deadline (passed: a replay has none) and the
 * caller's signature (rpc-key-id, rpc-signed-at, rpc-signature,
 * rpc-retry-token), with rpc-attempt reset to 1. Everything else, message_id
 * first of all, is kept. A replay is the operator's call: rpc-dlq signs it
 * with its own key (dlq_replay_add_signature). */
struct dlq_replay {
	amqp_basic_properties_t props; /* points into the original and into entries */
	amqp_table_entry_t *entries;   /* malloc'd */
};
/* false when out of memory. The original must outlive out. */
bool dlq_replay_props(const amqp_basic_properties_t *orig, struct dlq_replay *out);
/* Adds the signature headers of a replay; they point into key_id and sig,
 * which must outlive the publish. Once per replay. */
void dlq_replay_add_signature(struct dlq_replay *r, const char *key_id, int64_t signed_at_ms,
                              const unsigned char *sig, size_t len);
void dlq_replay_free(struct dlq_replay *r);
/* True for the headers a replay drops. */
bool dlq_replay_drops(amqp_bytes_t key);

/* Copies len bytes of src into dst (cap bytes) as printable UTF-8: control
 * characters and bytes that are not valid UTF-8 become '?'. Stops at a
 * character boundary when dst is full. */
void dlq_printable(char *dst, size_t cap, const void *src, size_t len);
/* Cuts s to at most columns characters, ending it with "..." when cut. */
void dlq_truncate(char *s, size_t columns);
/* The number of characters (code points) of a valid UTF-8 string. */
size_t dlq_columns(const char *s);

#endif
