/* params.c: field checks for the user service's handlers. Messages follow
 * one pattern, "field NAME: what is wrong", which the tests assert. */
#define _POSIX_C_SOURCE 200809L
#include "params.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void check_fail(struct check *c, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	if (c->status != WARREN_STATUS_OK) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->status = warren_request_fail(c->req, WARREN_STATUS_INVALID_ARGUMENT, NULL, "%s", msg);
}

static bool allowed_name(const char *const *allowed, const char *name)
{
	for (; *allowed != NULL; allowed++) {
		if (strcmp(*allowed, name) == 0) {
			return true;
		}
	}
	return false;
}

void check_start(struct check *c, warren_request *req, const char *const *allowed)
{
	const warren_value *p = warren_request_params(req), *val;
	const char *key;

	*c = (struct check){.req = req, .params = p, .status = WARREN_STATUS_OK};
	if (warren_value_type(p) != WARREN_MAP) {
		check_fail(c, "params: expected a map, got %s",
		           warren_type_name(warren_value_type(p)));
		return;
	}
	for (size_t i = 0; i < warren_value_len(p); i++) {
		warren_map_at(p, i, &key, &val);
		if (!allowed_name(allowed, key)) {
			check_fail(c, "unknown field \"%s\"", key);
			return;
		}
	}
}

/* The field's value when present and of type t; NULL otherwise (and the
 * check fails when the field is required or of another type). */
static const warren_value *field(struct check *c, const char *name, bool required, warren_type t)
{
	const warren_value *v;

	if (c->status != WARREN_STATUS_OK) {
		return NULL;
	}
	v = warren_map_get(c->params, name);
	if (v == NULL) {
		if (required) {
			check_fail(c, "field %s: required", name);
		}
		return NULL;
	}
	if (warren_value_type(v) != t) {
		check_fail(c, "field %s: expected %s, got %s", name, warren_type_name(t),
		           warren_type_name(warren_value_type(v)));
		return NULL;
	}
	return v;
}

bool check_int(struct check *c, const char *name, bool required, int64_t min, int64_t max,
               int64_t *out)
{
	const warren_value *v = field(c, name, required, WARREN_INT);
	int64_t n;

	if (v == NULL || !warren_value_get_int(v, &n)) {
		return false;
	}
	if (n < min || n > max) {
		check_fail(c, "field %s: %lld is out of range %lld..%lld", name, (long long)n,
		           (long long)min, (long long)max);
		return false;
	}
	*out = n;
	return true;
}

static bool has_control(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			return true;
		}
	}
	return false;
}

bool check_str(struct check *c, const char *name, bool required, size_t min, size_t max,
               const char **out)
{
	const warren_value *v = field(c, name, required, WARREN_STR);
	const char *s;
	size_t len;

	if (v == NULL || !warren_value_get_str(v, &s, &len)) {
		return false;
	}
	if (len < min || len > max || has_control(s, len)) {
		check_fail(c, "field %s: must be %zu to %zu bytes without control characters", name,
		           min, max);
		return false;
	}
	*out = s;
	return true;
}

/* Deliberately loose: one '@' with something on each side and no blanks.
 * Only sending mail proves an address. */
static bool looks_like_email(const char *s)
{
	const char *at = strchr(s, '@');

	return at != NULL && at != s && at[1] != '\0' && strchr(at + 1, '@') == NULL &&
	       strpbrk(s, " \t") == NULL;
}

bool check_email(struct check *c, const char *name, bool required, const char **out)
{
	const char *s;

	if (!check_str(c, name, required, 3, 254, &s)) {
		return false;
	}
	if (!looks_like_email(s)) {
		check_fail(c, "field %s: \"%s\" is not an email address", name, s);
		return false;
	}
	*out = s;
	return true;
}

bool check_map_json(struct check *c, const char *name, bool required, size_t max_json, char **json)
{
	const warren_value *v = field(c, name, required, WARREN_MAP);
	char why[200];

	if (v == NULL) {
		return false;
	}
	if (warren_value_to_json(v, json, why, sizeof(why)) != WARREN_OK) {
		check_fail(c, "field %s: %s", name, why);
		return false;
	}
	if (strlen(*json) > max_json) {
		check_fail(c, "field %s: larger than %zu bytes as JSON", name, max_json);
		free(*json);
		*json = NULL;
		return false;
	}
	return true;
}
