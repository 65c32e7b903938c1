/* dlq_print.c: the table and the full view of dead letters. The data
 * comes from messages that went wrong, so it is made printable before it
 * reaches a terminal, and what cannot be read is shown as "?" with a note. */
#include "dlq_print.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deadletter.h"
#include "dlq_json.h"

/* ------------------------------------------------------------------- table */

bool dlq_row_fill(struct dlq_row *row, const struct dlq_letter *l, int64_t now_ms)
{
	char age[24] = DLQ_UNKNOWN, attempts[24] = DLQ_UNKNOWN;
	const char *cells[DLQ_NCOLS] = {age,      l->method,         l->reason,
	                                attempts, l->correlation_id, l->error};

	if (l->time_ms != 0) {
		dlq_format_age(now_ms - l->time_ms, age, sizeof(age));
	}
	if (l->attempts >= 0) {
		snprintf(attempts, sizeof(attempts), "%lld", (long long)l->attempts);
	}
	for (int c = 0; c < DLQ_NCOLS; c++) {
		row->cells[c] = strdup(cells[c]);
		if (row->cells[c] == NULL) {
			dlq_row_free(row);
			return false;
		}
	}
	return true;
}

void dlq_row_free(struct dlq_row *row)
{
	for (int c = 0; row != NULL && c < DLQ_NCOLS; c++) {
		free(row->cells[c]);
		row->cells[c] = NULL;
	}
}

/* One line, each cell padded to its column's width, without trailing
 * blanks (a row with no ERROR ends at its CORRELATION_ID). */
static void print_line(FILE *out, const char *const *cells, const size_t *width)
{
	size_t pending = 0;

	for (int c = 0; c < DLQ_NCOLS; c++) {
		bool empty = cells[c][0] == '\0';

		if (!empty) {
			fprintf(out, "%*s%s", (int)pending, "", cells[c]);
			pending = 0;
		}
		pending += width[c] + 2 - (empty ? 0 : dlq_columns(cells[c]));
	}
	fputc('\n', out);
}

void dlq_print_table(FILE *out, struct dlq_row *rows, size_t n, size_t width)
{
	static const char *const heads[DLQ_NCOLS] = {"AGE",      "METHOD",         "REASON",
	                                             "ATTEMPTS", "CORRELATION_ID", "ERROR"};
	size_t w[DLQ_NCOLS], used = 0;

	for (int c = 0; c < DLQ_NCOLS; c++) {
		w[c] = strlen(heads[c]);
		for (size_t r = 0; r < n; r++) {
			size_t cw = dlq_columns(rows[r].cells[c]);

			w[c] = cw > w[c] ? cw : w[c];
		}
		used += c < DLQ_COL_ERROR ? w[c] + 2 : 0;
	}
	print_line(out, heads, w);
	for (size_t r = 0; r < n; r++) {
		if (width > 0) {
			dlq_truncate(rows[r].cells[DLQ_COL_ERROR],
			             width > used + 10 ? width - used : 10);
		}
		print_line(out, (const char *const *)rows[r].cells, w);
	}
}

/* -------------------------------------------------------------- full view */

/* A JSON value as printable text: C0 and C1 controls never reach the
 * terminal, even from inside a string. */
static void print_json(FILE *out, const json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	size_t len = text != NULL ? strlen(text) : 0;
	char *safe = malloc(len + 1);

	if (text != NULL && safe != NULL) {
		dlq_printable(safe, len + 1, text, len);
		fputs(safe, out);
	} else {
		fputs("(out of memory)", out);
	}
	free(safe);
	free(text);
}

/* " (2026-11-22T03:04:05.123Z)" for Unix ms, then the newline. */
static void print_time(FILE *out, int64_t ms)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	char buf[32];

	if (ms >= 0 && gmtime_r(&secs, &tm) != NULL &&
	    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm) > 0) {
		fprintf(out, " (%s.%03dZ)", buf, (int)(ms % 1000));
	}
	fputc('\n', out);
}

static size_t widest_key(const json_t *o)
{
	const char *key;
	json_t *v;
	size_t w = 0;

	json_object_foreach((json_t *)o, key, v)
	{
		w = dlq_columns(key) > w ? dlq_columns(key) : w;
	}
	return w;
}

/* Times in milliseconds that deserve a date next to them. */
static bool is_ms_time(const char *key, const json_t *v)
{
	return json_is_integer(v) &&
	       (strcmp(key, DL_H_TIME) == 0 || strcmp(key, "rpc-deadline") == 0);
}

/* One "  key: value" line; properties' strings as text, the rest as JSON. */
static void print_entry(FILE *out, const char *key, const json_t *v, size_t w, bool headers)
{
	char k[512], text[1024];

	dlq_printable(k, sizeof(k), key, strlen(key));
	fprintf(out, "  %s:%*s ", k, (int)(w - dlq_columns(k)), "");
	if (!headers && json_is_string(v)) {
		dlq_printable(text, sizeof(text), json_string_value(v), json_string_length(v));
		fprintf(out, "%s\n", text);
	} else if (!headers && strcmp(key, "timestamp") == 0 && json_is_integer(v)) {
		fprintf(out, "%lld", (long long)json_integer_value(v));
		print_time(out, json_integer_value(v) * 1000);
	} else {
		print_json(out, v);
		if (headers && is_ms_time(key, v)) {
			print_time(out, json_integer_value(v));
		} else {
			fputc('\n', out);
		}
	}
}

static void print_section(FILE *out, const char *title, const json_t *o, bool headers)
{
	size_t w = widest_key(o);
	const char *key;
	json_t *v;

	fprintf(out, "%s:\n", title);
	json_object_foreach((json_t *)o, key, v)
	{
		if (headers || strcmp(key, "headers") != 0) {
			print_entry(out, key, v, w, headers);
		}
	}
}

static void print_body(FILE *out, const amqp_message_t *m)
{
	const amqp_basic_properties_t *p = &m->properties;
	char ct[256] = "no content type", why[400];
	json_t *j = dlq_json_body(p, m->body, why, sizeof(why));
	char *b64;

	if ((p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) && p->content_type.len > 0) {
		dlq_printable(ct, sizeof(ct), p->content_type.bytes, p->content_type.len);
	}
	fprintf(out, "body (%s, %zu byte%s):", ct, m->body.len, m->body.len == 1 ? "" : "s");
	if (j != NULL) {
		fputs("\n  ", out);
		print_json(out, j);
		fputc('\n', out);
		json_decref(j);
		return;
	}
	b64 = dlq_base64(m->body.bytes, m->body.len);
	fprintf(out, " %s\n  base64: %s\n", why, b64 != NULL ? b64 : "(out of memory)");
	free(b64);
}

void dlq_print_letter(FILE *out, const amqp_message_t *m, const char *routing_key,
                      const struct dlq_letter *l)
{
	json_t *props = dlq_json_properties(&m->properties, false);
	json_t *headers = props != NULL ? json_object_get(props, "headers") : NULL;
	char rk[512];

	dlq_printable(rk, sizeof(rk), routing_key, strlen(routing_key));
	fprintf(out, "routing_key: %s\n", rk);
	if (props != NULL) {
		print_section(out, "properties", props, false);
	}
	if (json_is_object(headers) && json_object_get(headers, "$type") == NULL) {
		print_section(out, "headers", headers, true);
	} else if (headers != NULL) {
		fputs("headers: ", out);
		print_json(out, headers);
		fputc('\n', out);
	}
	print_body(out, m);
	if (l->notes[0] != '\0') {
		fprintf(out, "notes: %s\n", l->notes);
	}
	json_decref(props);
}
