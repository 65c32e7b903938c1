/* store.h: the user service's PostgreSQL store. One store per handler thread
 * (libpq connections are not shared), connected lazily and again after the
 * database went away, with its statements prepared on every connection. */
#ifndef USER_STORE_H
#define USER_STORE_H

#include "warren.h"

struct store;

/* What a store operation ended with, as the caller will see it. */
struct outcome {
	warren_status status; /* OK, NOT_FOUND, ALREADY_EXISTS, UNAVAILABLE, INTERNAL... */
	warren_value *result; /* OK: the result; otherwise the error's details or NULL */
	char message[256];    /* otherwise: the error message */
};

enum { STORE_OK = 0, STORE_RETRY = -1, STORE_PERMANENT = -2 };

/* Creates or migrates the schema (versioned, idempotent, safe when several
 * daemons start at once). STORE_OK; STORE_RETRY with errstr when the
 * database cannot be reached or fails (try again later); STORE_PERMANENT
 * when the schema is newer than this program. */
int store_migrate(const char *conninfo, char *errstr, size_t errlen);

/* A store for one thread; it connects on first use. NULL when out of memory. */
struct store *store_open(const char *conninfo, const char *app_name);
void store_close(struct store *s); /* NULL-safe */

/* Reads. */
void store_get(struct store *s, int64_t id, const char *email, struct outcome *out);
/* Whether the database answers (connecting if needed): OK or UNAVAILABLE. */
void store_ping(struct store *s, struct outcome *out);
void store_list(struct store *s, int64_t after_id, int64_t limit, struct outcome *out);

/* A change to make exactly once per message_id: the arguments of one of the
 * mutating methods. NULL fields are left alone (update). */
enum change_kind { CHANGE_CREATE, CHANGE_UPDATE, CHANGE_DELETE, CHANGE_SET_PREFERENCES };
struct change {
	enum change_kind kind;
	int64_t id;
	const char *email, *name;
	const char *preferences_json;
};

/* Makes the change in one transaction with the idempotency record of
 * message_id (method names the call): a message_id seen before gets the
 * stored outcome and changes nothing. An empty message_id: no record. */
void store_apply(struct store *s, const char *message_id, const char *method,
                 const struct change *c, struct outcome *out);

#endif
