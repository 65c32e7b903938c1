/* params.h: checking a request's parameters field by field, so that every
 * refusal is INVALID_ARGUMENT with a message naming the field. */
#ifndef USER_PARAMS_H
#define USER_PARAMS_H

#include "warren.h"

/* The first failure ends the check: later calls do nothing and return false
 * or NULL, so a handler can check all fields and look at status once. */
struct check {
	warren_request *req;
	const warren_value *params;
	warren_status status; /* OK until a field failed */
};

/* Starts a check; the params must be a map with no field outside allowed
 * (NULL-terminated). */
void check_start(struct check *c, warren_request *req, const char *const *allowed);

/* Each returns true with *out set when the field is present and valid;
 * false when absent (a failure when required) or invalid. */
bool check_int(struct check *c, const char *name, bool required, int64_t min, int64_t max,
               int64_t *out);
bool check_str(struct check *c, const char *name, bool required, size_t min, size_t max,
               const char **out);
bool check_email(struct check *c, const char *name, bool required, const char **out);
/* A map, as compact JSON text (malloc'd) in *json. */
bool check_map_json(struct check *c, const char *name, bool required, size_t max_json, char **json);

/* Fails the check with a message of its own (INVALID_ARGUMENT). */
void check_fail(struct check *c, const char *fmt, ...) WARREN_PRINTF(2, 3);

#endif
