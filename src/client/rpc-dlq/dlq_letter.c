/* dlq_letter.c: reading a dead letter's properties the way an operator
 * needs them: every header is optional and may have the wrong type, since
 * dead letters are by nature the messages that went wrong; what cannot be
 * read is shown as "?" and explained in the notes. */
#include "dlq_letter.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadletter.h"
#include "envelope.h"
#include "utf8.h"
#include "wire.h"

#define BROKER_PREFIX "broker:"

const char *dlq_kind_name(uint8_t kind)
{
	static char other[16];

	switch (kind) {
	case AMQP_FIELD_KIND_BOOLEAN:
		return "boolean";
	case AMQP_FIELD_KIND_I8:
		return "int8";
	case AMQP_FIELD_KIND_U8:
		return "uint8";
	case AMQP_FIELD_KIND_I16:
		return "int16";
	case AMQP_FIELD_KIND_U16:
		return "uint16";
	case AMQP_FIELD_KIND_I32:
		return "int32";
	case AMQP_FIELD_KIND_U32:
		return "uint32";
	case AMQP_FIELD_KIND_I64:
		return "int64";
	case AMQP_FIELD_KIND_U64:
		return "uint64";
	case AMQP_FIELD_KIND_F32:
		return "float32";
	case AMQP_FIELD_KIND_F64:
		return "float64";
	case AMQP_FIELD_KIND_DECIMAL:
		return "decimal";
	case AMQP_FIELD_KIND_UTF8:
		return "string";
	case AMQP_FIELD_KIND_ARRAY:
		return "array";
	case AMQP_FIELD_KIND_TIMESTAMP:
		return "timestamp";
	case AMQP_FIELD_KIND_TABLE:
		return "table";
	case AMQP_FIELD_KIND_VOID:
		return "void";
	case AMQP_FIELD_KIND_BYTES:
		return "bytes";
	}
	snprintf(other, sizeof(other), "kind-0x%02x", kind);
	return other;
}

/* ------------------------------------------------------------------ text */

/* The length of the valid UTF-8 character at p, or 0. */
static size_t char_len(const unsigned char *p, size_t left)
{
	unsigned char c = p[0];
	size_t n = c < 0x80             ? 1
	           : (c & 0xE0) == 0xC0 ? 2
	           : (c & 0xF0) == 0xE0 ? 3
	           : (c & 0xF8) == 0xF0 ? 4
	                                : 0;

	return n > 0 && n <= left && utf8_valid(p, n) ? n : 0;
}

/* C0 and C1 controls and DEL: a terminal would act on them. */
static bool is_control(const unsigned char *p, size_t n)
{
	return (n == 1 && (p[0] < 0x20 || p[0] == 0x7f)) || (n == 2 && p[0] == 0xC2 && p[1] < 0xA0);
}

void dlq_printable(char *dst, size_t cap, const void *src, size_t len)
{
	const unsigned char *p = src;
	size_t used = 0;

	if (cap == 0) {
		return;
	}
	for (size_t i = 0; i < len;) {
		size_t n = char_len(p + i, len - i);
		bool keep = n > 0 && !is_control(p + i, n);
		size_t out = keep ? n : 1;

		if (used + out >= cap) {
			break;
		}
		if (keep) {
			memcpy(dst + used, p + i, n);
		} else {
			dst[used] = '?'; /* one for a whole character, or for each bad byte */
		}
		used += out;
		i += n > 0 ? n : 1;
	}
	dst[used] = '\0';
}

size_t dlq_columns(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++) {
		n += ((unsigned char)*s & 0xC0) != 0x80;
	}
	return n;
}

void dlq_truncate(char *s, size_t columns)
{
	size_t keep = columns >= 3 ? columns - 3 : columns, seen = 0, i = 0;

	if (dlq_columns(s) <= columns) {
		return;
	}
	for (; s[i] != '\0'; i++) {
		if (((unsigned char)s[i] & 0xC0) != 0x80 && seen++ == keep) {
			break;
		}
	}
	if (columns >= 3) {
		memcpy(s + i, "...", 4);
	} else {
		s[i] = '\0';
	}
}

/* ----------------------------------------------------------------- reading */

static void note(struct dlq_letter *l, const char *fmt, ...) WARREN_PRINTF(2, 3);

static void note(struct dlq_letter *l, const char *fmt, ...)
{
	size_t used = strlen(l->notes);
	va_list ap;

	if (used > 0 && used + 2 < sizeof(l->notes)) {
		memcpy(l->notes + used, "; ", 3);
		used += 2;
	}
	va_start(ap, fmt);
	vsnprintf(l->notes + used, sizeof(l->notes) - used, fmt, ap);
	va_end(ap);
}

static bool field_is_text(const amqp_field_value_t *v)
{
	return v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES;
}

/* A string header into dst (printable); false when absent or not a string
 * (noted). */
static bool read_text(const amqp_field_value_t *v, const char *key, char *dst, size_t cap,
                      struct dlq_letter *l)
{
	if (v == NULL) {
		return false;
	}
	if (!field_is_text(v)) {
		note(l, "header %s: expected a string, got %s", key, dlq_kind_name(v->kind));
		return false;
	}
	dlq_printable(dst, cap, v->value.bytes.bytes, v->value.bytes.len);
	return true;
}

/* An integer header; false when absent or not an integer (noted). */
static bool read_int(const amqp_basic_properties_t *p, const char *key, int64_t *out,
                     struct dlq_letter *l)
{
	const amqp_field_value_t *v = wire_header(p, key);

	if (v == NULL) {
		return false;
	}
	if (!envelope_field_int(v, out)) {
		note(l, "header %s: expected an integer, got %s", key, dlq_kind_name(v->kind));
		return false;
	}
	return true;
}

/* The most recent entry of x-death (the broker puts it first), or NULL. */
static const amqp_table_t *last_death(const amqp_basic_properties_t *p)
{
	const amqp_field_value_t *v = wire_header(p, WIRE_H_DEATH);

	if (v == NULL || v->kind != AMQP_FIELD_KIND_ARRAY || v->value.array.num_entries < 1 ||
	    v->value.array.entries[0].kind != AMQP_FIELD_KIND_TABLE) {
		return NULL;
	}
	return &v->value.array.entries[0].value.table;
}

/* A dead letter the broker wrote: x-first-death-reason, else x-death's. */
static bool read_broker_reason(const amqp_basic_properties_t *p, struct dlq_letter *l)
{
	const amqp_table_t *death = last_death(p);
	const amqp_field_value_t *reason = wire_header(p, WIRE_H_FIRST_DEATH_REASON);
	const amqp_field_value_t *queue = wire_header(p, WIRE_H_FIRST_DEATH_QUEUE);
	char text[256] = "", from[256] = "";

	if (reason == NULL && death != NULL) {
		reason = wire_header_find(death, "reason");
		queue = wire_header_find(death, "queue");
	}
	if (!read_text(reason, WIRE_H_FIRST_DEATH_REASON, text, sizeof(text), l)) {
		return false;
	}
	snprintf(l->reason, sizeof(l->reason), BROKER_PREFIX "%s", text);
	if (read_text(queue, WIRE_H_FIRST_DEATH_QUEUE, from, sizeof(from), l)) {
		snprintf(l->error, sizeof(l->error), "dead-lettered by the broker from %s", from);
	} else {
		snprintf(l->error, sizeof(l->error), "dead-lettered by the broker");
	}
	return true;
}

static void read_reason(const amqp_basic_properties_t *p, struct dlq_letter *l)
{
	const amqp_field_value_t *v = wire_header(p, DL_H_REASON);

	if (read_text(v, DL_H_REASON, l->reason, sizeof(l->reason), l)) {
		read_text(wire_header(p, DL_H_ERROR), DL_H_ERROR, l->error, sizeof(l->error), l);
		return;
	}
	if (v == NULL && read_broker_reason(p, l)) {
		return;
	}
	snprintf(l->reason, sizeof(l->reason), DLQ_UNKNOWN);
	if (v == NULL && wire_header(p, WIRE_H_DEATH) == NULL) {
		note(l, "no " DL_H_REASON " header and no " WIRE_H_DEATH ": neither a worker nor "
		        "the broker dead-lettered it");
	}
	read_text(wire_header(p, DL_H_ERROR), DL_H_ERROR, l->error, sizeof(l->error), l);
}

/* rpc-dead-time, else the time of the last x-death (seconds). */
static void read_time(const amqp_basic_properties_t *p, struct dlq_letter *l)
{
	const amqp_table_t *death = last_death(p);
	const amqp_field_value_t *t;
	int64_t ms;

	l->time_ms = 0;
	if (read_int(p, DL_H_TIME, &ms, l)) {
		l->time_ms = ms;
		return;
	}
	t = death != NULL ? wire_header_find(death, "time") : NULL;
	if (t != NULL && t->kind == AMQP_FIELD_KIND_TIMESTAMP && t->value.u64 < INT64_MAX / 1000) {
		l->time_ms = (int64_t)t->value.u64 * 1000;
	}
}

/* The method: type, else the routing key, unless that is the queue's own
 * name (the dead letter was published straight to the queue). */
static void read_method(const amqp_basic_properties_t *p, const char *routing_key,
                        const char *queue, struct dlq_letter *l)
{
	amqp_bytes_t m = {0, NULL};

	if ((p->_flags & AMQP_BASIC_TYPE_FLAG) && p->type.len > 0) {
		m = p->type;
	} else if (routing_key != NULL && routing_key[0] != '\0' &&
	           strcmp(routing_key, queue) != 0) {
		m = amqp_cstring_bytes(routing_key);
		note(l, "no type property: the method is taken from the routing key");
	} else {
		note(l, "no type property: the method is unknown");
	}
	if (m.len == 0) {
		snprintf(l->method, sizeof(l->method), DLQ_UNKNOWN);
		return;
	}
	dlq_printable(l->method, sizeof(l->method), m.bytes, m.len);
	if (m.len < sizeof(l->route) && memchr(m.bytes, '\0', m.len) == NULL) {
		memcpy(l->route, m.bytes, m.len);
		l->route[m.len] = '\0';
	}
}

void dlq_letter_read(const amqp_basic_properties_t *p, const char *routing_key, const char *queue,
                     struct dlq_letter *out)
{
	memset(out, 0, sizeof(*out));
	read_method(p, routing_key, queue, out);
	read_reason(p, out);
	read_time(p, out);
	if (!read_int(p, "rpc-attempt", &out->attempts, out)) {
		out->attempts = -1;
	}
	if ((p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) && p->correlation_id.len > 0) {
		dlq_printable(out->correlation_id, sizeof(out->correlation_id),
		              p->correlation_id.bytes, p->correlation_id.len);
	} else {
		snprintf(out->correlation_id, sizeof(out->correlation_id), DLQ_UNKNOWN);
	}
}

/* ----------------------------------------------------------------- filters */

/* Exact, or a prefix when pattern ends in '*'. */
static bool pattern_match(const char *pattern, const char *s)
{
	size_t n = strlen(pattern);

	if (n > 0 && pattern[n - 1] == '*') {
		return strncmp(pattern, s, n - 1) == 0;
	}
	return strcmp(pattern, s) == 0;
}

bool dlq_filter_match(const struct dlq_filter *f, const struct dlq_letter *l, int64_t now_ms)
{
	int64_t age = now_ms - l->time_ms;

	if (f->method != NULL && !pattern_match(f->method, l->method)) {
		return false;
	}
	if (f->reason != NULL && !pattern_match(f->reason, l->reason)) {
		return false;
	}
	if ((f->older_than_ms >= 0 || f->newer_than_ms >= 0) && l->time_ms == 0) {
		return false;
	}
	if (f->older_than_ms >= 0 && age < f->older_than_ms) {
		return false;
	}
	return f->newer_than_ms < 0 || age < f->newer_than_ms;
}

bool dlq_parse_duration(const char *text, int64_t *ms)
{
	static const struct {
		const char *suffix;
		double ms;
	} units[] = {{"", 1000},   {"ms", 1},      {"s", 1000},
	             {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
	size_t num = strspn(text, "0123456789.");
	char number[32];
	double v;
	char *end = NULL;

	if (num == 0 || num >= sizeof(number)) {
		return false;
	}
	memcpy(number, text, num);
	number[num] = '\0';
	errno = 0;
	v = strtod(number, &end);
	if (errno != 0 || *end != '\0' || !isfinite(v)) {
		return false;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(text + num, units[i].suffix) == 0) {
			double total = v * units[i].ms;

			if (total > 3650.0 * 86400000.0) {
				return false;
			}
			*ms = (int64_t)llround(total);
			return true;
		}
	}
	return false;
}

void dlq_format_age(int64_t age_ms, char *buf, size_t cap)
{
	long long s = age_ms > 0 ? (long long)(age_ms / 1000) : 0;

	if (s < 60) {
		snprintf(buf, cap, "%llds", s);
	} else if (s < 3600) {
		snprintf(buf, cap, "%lldm", s / 60);
	} else if (s < 86400) {
		snprintf(buf, cap, "%lldh", s / 3600);
	} else {
		snprintf(buf, cap, "%lldd", s / 86400);
	}
}

/* ------------------------------------------------------------------ replay */

bool dlq_replay_drops(amqp_bytes_t key)
{
	/* The caller's signature (rpc-key-id, rpc-signed-at, rpc-signature)
	 * and retry token cover fields a replay changes: they go too. */
	static const char *const exact[] = {"rpc-deadline",  "rpc-attempt",   "rpc-key-id",
	                                    "rpc-signed-at", "rpc-signature", "rpc-retry-token"};

	if (wire_history_header(key) || wire_key_starts(key, "rpc-dead-")) {
		return true;
	}
	for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
		if (wire_key_is(key, exact[i])) {
			return true;
		}
	}
	return false;
}

static bool replay_drops(amqp_bytes_t key, const void *arg)
{
	return dlq_replay_drops(key);
}

bool dlq_replay_props(const amqp_basic_properties_t *orig, struct dlq_replay *out)
{
	int kept;

	out->props = *orig;
	/* Room for rpc-attempt and the three headers of a signature. */
	out->entries = malloc(((size_t)wire_header_count(orig) + 4) * sizeof(*out->entries));
	if (out->entries == NULL) {
		return false;
	}
	kept = wire_props_copy(&out->props, orig, out->entries, replay_drops, NULL);
	out->entries[kept].key = amqp_cstring_bytes("rpc-attempt");
	out->entries[kept].value.kind = AMQP_FIELD_KIND_I64;
	out->entries[kept].value.value.i64 = 1;
	kept++;
	out->props.headers.num_entries = kept;
	out->props._flags &= ~AMQP_BASIC_REPLY_TO_FLAG;
	out->props.reply_to = amqp_empty_bytes;
	return true;
}

void dlq_replay_add_signature(struct dlq_replay *r, const char *key_id, int64_t signed_at_ms,
                              const unsigned char *sig, size_t len)
{
	amqp_table_entry_t *e = &r->entries[r->props.headers.num_entries];

	e[0].key = amqp_cstring_bytes("rpc-key-id");
	e[0].value.kind = AMQP_FIELD_KIND_UTF8;
	e[0].value.value.bytes = amqp_cstring_bytes(key_id);
	e[1].key = amqp_cstring_bytes("rpc-signed-at");
	e[1].value.kind = AMQP_FIELD_KIND_I64;
	e[1].value.value.i64 = signed_at_ms;
	e[2].key = amqp_cstring_bytes("rpc-signature");
	e[2].value.kind = AMQP_FIELD_KIND_BYTES;
	e[2].value.value.bytes = (amqp_bytes_t){.len = len, .bytes = (void *)sig};
	r->props.headers.num_entries += 3;
}

void dlq_replay_free(struct dlq_replay *r)
{
	if (r != NULL) {
		free(r->entries);
		r->entries = NULL;
	}
}
