/* methods.c: the user service's methods: each checks its parameters, then
 * asks the handler thread's store. Validation failures, unknown users and
 * duplicate emails are ordinary error replies, never poison. */
#define _POSIX_C_SOURCE 200809L
#include "methods.h"

#include <stdio.h>
#include <stdlib.h>

#include "params.h"
#include "store.h"

#define MAX_ID               INT64_MAX
#define MAX_PREFERENCES_JSON 16384
#define MAX_PAGE             1000

/* Ends a handler with the store's outcome (taking its result). */
static warren_status answer(warren_request *req, struct outcome *out)
{
	if (out->status == WARREN_STATUS_OK) {
		warren_request_set_result(req, out->result);
		return WARREN_STATUS_OK;
	}
	return warren_request_fail(req, out->status, out->result, "%s", out->message);
}

static struct store *store_of(warren_request *req)
{
	return warren_request_thread_data(req);
}

static warren_status user_get(warren_request *req, void *arg)
{
	static const char *const fields[] = {"id", "email", NULL};
	const char *email = NULL;
	struct outcome out = {0};
	struct check c;
	int64_t id = 0;
	bool by_id, by_email;

	check_start(&c, req, fields);
	by_id = check_int(&c, "id", false, 1, MAX_ID, &id);
	by_email = check_email(&c, "email", false, &email);
	if (c.status == WARREN_STATUS_OK && by_id == by_email) {
		check_fail(&c, by_id ? "give field id or field email, not both"
		                     : "field id or field email: required");
	}
	if (c.status != WARREN_STATUS_OK) {
		return c.status;
	}
	store_get(store_of(req), id, by_email ? email : NULL, &out);
	return answer(req, &out);
}

static warren_status user_list(warren_request *req, void *arg)
{
	static const char *const fields[] = {"limit", "cursor", NULL};
	const char *cursor = NULL;
	struct outcome out = {0};
	int64_t limit = 50, after = 0;
	struct check c;
	char *end = NULL;

	check_start(&c, req, fields);
	check_int(&c, "limit", false, 1, MAX_PAGE, &limit);
	if (check_str(&c, "cursor", false, 1, 20, &cursor)) {
		after = strtoll(cursor, &end, 10);
		if (*end != '\0' || after < 1) {
			check_fail(&c, "field cursor: \"%s\" is not a cursor from user.list",
			           cursor);
		}
	}
	if (c.status != WARREN_STATUS_OK) {
		return c.status;
	}
	store_list(store_of(req), after, limit, &out);
	return answer(req, &out);
}

/* Applies a checked change exactly once per message_id. */
static warren_status change(warren_request *req, struct check *c, struct change *ch, char *json)
{
	struct outcome out = {0};

	if (c->status != WARREN_STATUS_OK) {
		free(json);
		return c->status;
	}
	ch->preferences_json = json;
	store_apply(store_of(req), warren_request_message_id(req), warren_request_method(req), ch,
	            &out);
	free(json);
	return answer(req, &out);
}

static warren_status user_create(warren_request *req, void *arg)
{
	static const char *const fields[] = {"email", "name", "preferences", NULL};
	struct change ch = {.kind = CHANGE_CREATE};
	char *json = NULL;
	struct check c;

	check_start(&c, req, fields);
	check_email(&c, "email", true, &ch.email);
	check_str(&c, "name", true, 1, 200, &ch.name);
	check_map_json(&c, "preferences", false, MAX_PREFERENCES_JSON, &json);
	return change(req, &c, &ch, json);
}

static warren_status user_update(warren_request *req, void *arg)
{
	static const char *const fields[] = {"id", "email", "name", "preferences", NULL};
	struct change ch = {.kind = CHANGE_UPDATE};
	char *json = NULL;
	struct check c;
	bool any;

	check_start(&c, req, fields);
	check_int(&c, "id", true, 1, MAX_ID, &ch.id);
	any = check_email(&c, "email", false, &ch.email);
	any |= check_str(&c, "name", false, 1, 200, &ch.name);
	any |= check_map_json(&c, "preferences", false, MAX_PREFERENCES_JSON, &json);
	if (!any) {
		check_fail(&c, "nothing to update: give field email, name or preferences");
	}
	return change(req, &c, &ch, json);
}

static warren_status user_delete(warren_request *req, void *arg)
{
	static const char *const fields[] = {"id", NULL};
	struct change ch = {.kind = CHANGE_DELETE};
	struct check c;

	check_start(&c, req, fields);
	check_int(&c, "id", true, 1, MAX_ID, &ch.id);
	return change(req, &c, &ch, NULL);
}

/* The preferences of a user's record, as the preferences methods answer. */
static warren_status preferences_only(warren_request *req, struct outcome *out)
{
	if (out->status == WARREN_STATUS_OK) {
		warren_value *prefs = warren_value_copy(warren_map_get(out->result, "preferences"));

		warren_value_free(out->result);
		out->result = prefs;
	}
	return answer(req, out);
}

static warren_status preferences_get(warren_request *req, void *arg)
{
	static const char *const fields[] = {"id", NULL};
	struct outcome out = {0};
	struct check c;
	int64_t id = 0;

	check_start(&c, req, fields);
	check_int(&c, "id", true, 1, MAX_ID, &id);
	if (c.status != WARREN_STATUS_OK) {
		return c.status;
	}
	store_get(store_of(req), id, NULL, &out);
	return preferences_only(req, &out);
}

static warren_status preferences_set(warren_request *req, void *arg)
{
	static const char *const fields[] = {"id", "preferences", NULL};
	struct change ch = {.kind = CHANGE_SET_PREFERENCES};
	struct outcome out = {0};
	char *json = NULL;
	struct check c;

	check_start(&c, req, fields);
	check_int(&c, "id", true, 1, MAX_ID, &ch.id);
	check_map_json(&c, "preferences", true, MAX_PREFERENCES_JSON, &json);
	if (c.status != WARREN_STATUS_OK) {
		free(json);
		return c.status;
	}
	ch.preferences_json = json;
	store_apply(store_of(req), warren_request_message_id(req), warren_request_method(req), &ch,
	            &out);
	free(json);
	return preferences_only(req, &out);
}

static void *thread_start(int index, void *arg)
{
	char name[64];

	snprintf(name, sizeof(name), "user-service/%d", index);
	return store_open(arg, name);
}

static void thread_end(void *thread_data, void *arg)
{
	store_close(thread_data);
}

/* The circuit breaker's probe: is the database back? */
static warren_status probe(void *thread_data, void *arg)
{
	struct outcome out;

	store_ping(thread_data, &out);
	warren_value_free(out.result);
	return out.status;
}

warren_err methods_register(warren_worker *w, const char *conninfo)
{
	static const struct {
		const char *name;
		warren_handler_fn fn;
	} table[] = {
	    {"user.get", user_get},
	    {"user.list", user_list},
	    {"user.create", user_create},
	    {"user.update", user_update},
	    {"user.delete", user_delete},
	    {"user.preferences.get", preferences_get},
	    {"user.preferences.set", preferences_set},
	};
	warren_err err = warren_worker_on_thread(w, thread_start, thread_end, (void *)conninfo);

	if (err == WARREN_OK) {
		err = warren_worker_set_probe(w, probe, NULL);
	}
	for (size_t i = 0; err == WARREN_OK && i < sizeof(table) / sizeof(table[0]); i++) {
		err = warren_worker_handle(w, table[i].name, table[i].fn, NULL);
	}
	return err;
}
