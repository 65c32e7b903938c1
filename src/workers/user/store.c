/* store.c: users and idempotency records in PostgreSQL through libpq. Each
 * change runs in one READ COMMITTED transaction with its idempotency record,
 * so a redelivered request finds the stored outcome instead of changing
 * anything twice; a lost connection is reopened (statements prepared again)
 * and the transaction retried once before the caller hears UNAVAILABLE. */
#define _POSIX_C_SOURCE 200809L
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "warren.h"

struct store {
	char *conninfo;
	char app_name[64];
	PGconn *db; /* NULL until connected, and after the connection was lost */
};

/* ------------------------------------------------------------ schema */

/* Each entry takes the schema from version i to i+1. Never edit one that has
 * shipped: append another. */
static const char *const migrations[] = {
    "CREATE TABLE users ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " email text NOT NULL,"
    " name text NOT NULL,"
    " preferences jsonb NOT NULL DEFAULT '{}'::jsonb,"
    " created_at timestamptz NOT NULL DEFAULT now(),"
    " updated_at timestamptz NOT NULL DEFAULT now());"
    "CREATE UNIQUE INDEX users_email_key ON users (lower(email));"
    "CREATE TABLE rpc_idempotency ("
    " message_id text PRIMARY KEY,"
    " method text NOT NULL,"
    " status integer,"
    " message text,"
    " reply text,"
    " created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX rpc_idempotency_created_at ON rpc_idempotency (created_at);",
};

#define NMIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))

/* The server's notices ("relation already exists, skipping") go to the
 * debug log, not raw to stderr. */
static void on_notice(void *arg, const char *message)
{
	warren_log(WARREN_LOG_DEBUG, "database notice: %.*s", (int)strcspn(message, "\n"), message);
}

static PGconn *connect_db(const char *conninfo, const char *app_name)
{
	const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
	const char *vals[] = {conninfo, app_name, "5", NULL};
	PGconn *db = PQconnectdbParams(keys, vals, 1);

	if (db != NULL) {
		PQsetNoticeProcessor(db, on_notice, NULL);
	}
	return db;
}

/* The first line of libpq's message, which ends with a newline. */
static void pq_message(const char *msg, char *dst, size_t cap)
{
	snprintf(dst, cap, "%.*s", (int)strcspn(msg, "\n"), msg);
}

static int run(PGconn *db, const char *sql, char *errstr, size_t errlen)
{
	PGresult *r = PQexec(db, sql);
	ExecStatusType st = PQresultStatus(r);
	char why[256];

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		pq_message(PQerrorMessage(db), why, sizeof(why));
		snprintf(errstr, errlen, "schema migration: %s", why);
		PQclear(r);
		return -1;
	}
	PQclear(r);
	return 0;
}

static int schema_version(PGconn *db, int *version, char *errstr, size_t errlen)
{
	PGresult *r = PQexec(db, "SELECT coalesce(max(version), 0) FROM user_service_schema");

	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		snprintf(errstr, errlen, "schema migration: %s", PQerrorMessage(db));
		PQclear(r);
		return -1;
	}
	*version = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return 0;
}

/* Under a transaction-wide advisory lock, so daemons starting together
 * migrate once. */
static int migrate(PGconn *db, char *errstr, size_t errlen)
{
	char sql[128];
	int version;

	if (run(db, "BEGIN", errstr, errlen) != 0 ||
	    run(db, "SELECT pg_advisory_xact_lock(hashtext('user-service schema'))", errstr,
	        errlen) != 0 ||
	    run(db, "CREATE TABLE IF NOT EXISTS user_service_schema (version integer NOT NULL)",
	        errstr, errlen) != 0 ||
	    schema_version(db, &version, errstr, errlen) != 0) {
		return -1;
	}
	if (version > (int)NMIGRATIONS) {
		snprintf(errstr, errlen,
		         "the database schema is at version %d, newer than this user-service knows "
		         "(%zu): run a newer user-service",
		         version, NMIGRATIONS);
		return STORE_PERMANENT; /* PQfinish ends the transaction */
	}
	for (size_t i = (size_t)version; i < NMIGRATIONS; i++) {
		snprintf(sql, sizeof(sql), "INSERT INTO user_service_schema VALUES (%zu)", i + 1);
		if (run(db, migrations[i], errstr, errlen) != 0 ||
		    run(db, sql, errstr, errlen) != 0) {
			return -1;
		}
		warren_log(WARREN_LOG_INFO, "database schema migrated to version %zu", i + 1);
	}
	return run(db, "COMMIT", errstr, errlen);
}

int store_migrate(const char *conninfo, char *errstr, size_t errlen)
{
	PGconn *db = connect_db(conninfo, "user-service migrate");
	char why[256];
	int rc = -1;

	if (PQstatus(db) != CONNECTION_OK) {
		pq_message(PQerrorMessage(db), why, sizeof(why));
		snprintf(errstr, errlen, "cannot connect to the database: %s", why);
	} else {
		rc = migrate(db, errstr, errlen);
	}
	PQfinish(db);
	return rc;
}

/* ------------------------------------------------------------ statements */

#define USER_COLUMNS "id, email, name, preferences::text"

static const struct statement {
	const char *name;
	const char *sql;
} statements[] = {
    {"get_by_id", "SELECT " USER_COLUMNS " FROM users WHERE id = $1"},
    {"get_by_email", "SELECT " USER_COLUMNS " FROM users WHERE lower(email) = lower($1)"},
    {"list", "SELECT " USER_COLUMNS " FROM users WHERE id > $1 ORDER BY id LIMIT $2"},
    {"create", "INSERT INTO users (email, name, preferences) VALUES ($1, $2, "
               "coalesce($3::jsonb, '{}'::jsonb)) RETURNING " USER_COLUMNS},
    {"update", "UPDATE users SET email = coalesce($2, email), name = coalesce($3, name), "
               "preferences = coalesce($4::jsonb, preferences), updated_at = now() "
               "WHERE id = $1 RETURNING " USER_COLUMNS},
    {"delete", "DELETE FROM users WHERE id = $1 RETURNING " USER_COLUMNS},
    {"claim", "INSERT INTO rpc_idempotency (message_id, method) VALUES ($1, $2) "
              "ON CONFLICT (message_id) DO NOTHING RETURNING 1"},
    {"stored", "SELECT method, status, message, reply FROM rpc_idempotency "
               "WHERE message_id = $1"},
    {"record", "UPDATE rpc_idempotency SET status = $2, message = $3, reply = $4 "
               "WHERE message_id = $1"},
};

struct store *store_open(const char *conninfo, const char *app_name)
{
	struct store *s = calloc(1, sizeof(*s));

	if (s == NULL || (s->conninfo = strdup(conninfo)) == NULL) {
		free(s);
		return NULL;
	}
	snprintf(s->app_name, sizeof(s->app_name), "%s", app_name);
	return s;
}

void store_close(struct store *s)
{
	if (s == NULL) {
		return;
	}
	PQfinish(s->db);
	free(s->conninfo);
	free(s);
}

static void fail(struct outcome *out, warren_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct outcome *out, warren_status status, const char *fmt, ...)
{
	va_list ap;

	out->status = status;
	va_start(ap, fmt);
	vsnprintf(out->message, sizeof(out->message), fmt, ap);
	va_end(ap);
}

static void drop_connection(struct store *s)
{
	PQfinish(s->db);
	s->db = NULL;
}

static bool prepare_all(struct store *s, struct outcome *out)
{
	for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++) {
		PGresult *r = PQprepare(s->db, statements[i].name, statements[i].sql, 0, NULL);
		bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
		char why[256];

		PQclear(r);
		if (!ok) {
			pq_message(PQerrorMessage(s->db), why, sizeof(why));
			fail(out, WARREN_STATUS_UNAVAILABLE, "database: preparing %s: %s",
			     statements[i].name, why);
			drop_connection(s);
			return false;
		}
	}
	return true;
}

/* Connects (again) when needed; false with out set to UNAVAILABLE. */
static bool ensure_connected(struct store *s, struct outcome *out)
{
	char why[256];

	if (s->db != NULL && PQstatus(s->db) == CONNECTION_OK) {
		return true;
	}
	drop_connection(s);
	s->db = connect_db(s->conninfo, s->app_name);
	if (PQstatus(s->db) != CONNECTION_OK) {
		pq_message(PQerrorMessage(s->db), why, sizeof(why));
		fail(out, WARREN_STATUS_UNAVAILABLE, "database unavailable: %s", why);
		drop_connection(s);
		return false;
	}
	return prepare_all(s, out);
}

/* ------------------------------------------------------------ results */

static bool sqlstate_is(const PGresult *r, const char *state)
{
	const char *got = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	return got != NULL && strcmp(got, state) == 0;
}

/* Classifies a failed statement: a lost connection is UNAVAILABLE (and
 * retried by the caller), anything else INTERNAL. */
static void exec_failed(struct store *s, PGresult *r, const char *what, struct outcome *out)
{
	char why[256];

	pq_message(PQresultErrorMessage(r)[0] != '\0' ? PQresultErrorMessage(r)
	                                              : PQerrorMessage(s->db),
	           why, sizeof(why));
	if (PQstatus(s->db) != CONNECTION_OK || sqlstate_is(r, "57P01") ||
	    sqlstate_is(r, "40001") || sqlstate_is(r, "40P01")) {
		fail(out, WARREN_STATUS_UNAVAILABLE, "database unavailable: %s", why);
		drop_connection(s);
	} else {
		fail(out, WARREN_STATUS_INTERNAL, "database: %s: %s", what, why);
	}
}

static PGresult *exec(struct store *s, const char *stmt, int n, const char *const *values,
                      struct outcome *out)
{
	PGresult *r = PQexecPrepared(s->db, stmt, n, values, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);

	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		return r;
	}
	if (sqlstate_is(r, "23505")) {
		fail(out, WARREN_STATUS_ALREADY_EXISTS, "a user with this email already exists");
	} else {
		exec_failed(s, r, stmt, out);
	}
	PQclear(r);
	return NULL;
}

static bool command(struct store *s, const char *sql, struct outcome *out)
{
	PGresult *r = PQexec(s->db, sql);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;

	if (!ok) {
		exec_failed(s, r, sql, out);
	}
	PQclear(r);
	return ok;
}

void store_ping(struct store *s, struct outcome *out)
{
	memset(out, 0, sizeof(*out));
	out->status = WARREN_STATUS_OK;
	if (ensure_connected(s, out)) {
		PGresult *r = PQexec(s->db, "SELECT 1");
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			exec_failed(s, r, "SELECT 1", out);
		}
		PQclear(r);
	}
}

static warren_value *row_to_user(const PGresult *r, int row)
{
	warren_value *u = warren_map(), *prefs = NULL;
	const char *json = PQgetvalue(r, row, 3);

	if (warren_value_from_json(json, strlen(json), &prefs, NULL, 0) != WARREN_OK) {
		prefs = warren_map();
	}
	warren_map_set(u, "id", warren_int(strtoll(PQgetvalue(r, row, 0), NULL, 10)));
	warren_map_set(u, "email", warren_str(PQgetvalue(r, row, 1)));
	warren_map_set(u, "name", warren_str(PQgetvalue(r, row, 2)));
	if (warren_map_set(u, "preferences", prefs) != WARREN_OK) {
		warren_value_free(u);
		return NULL;
	}
	return u;
}

static void one_user(PGresult *r, const char *not_found, struct outcome *out)
{
	if (PQntuples(r) == 0) {
		fail(out, WARREN_STATUS_NOT_FOUND, "%s", not_found);
		return;
	}
	out->result = row_to_user(r, 0);
	out->status = out->result != NULL ? WARREN_STATUS_OK : WARREN_STATUS_RESOURCE_EXHAUSTED;
}

/* ------------------------------------------------------------ reads */

static void get_once(struct store *s, int64_t id, const char *email, struct outcome *out)
{
	char idtext[24], missing[300];
	PGresult *r;

	snprintf(idtext, sizeof(idtext), "%lld", (long long)id);
	if (email != NULL) {
		snprintf(missing, sizeof(missing), "no user with email %s", email);
		r = exec(s, "get_by_email", 1, (const char *const[]){email}, out);
	} else {
		snprintf(missing, sizeof(missing), "no user with id %s", idtext);
		r = exec(s, "get_by_id", 1, (const char *const[]){idtext}, out);
	}
	if (r != NULL) {
		one_user(r, missing, out);
		PQclear(r);
	}
}

/* Runs a read, and once more on a fresh connection if the first one was
 * lost (the database restarted since the last call). */
#define WITH_RETRY(s, out, call)                                                                   \
	do {                                                                                       \
		for (int try_ = 0; try_ < 2; try_++) {                                             \
			memset((out), 0, sizeof(*(out)));                                          \
			if (!ensure_connected((s), (out))) {                                       \
				continue;                                                          \
			}                                                                          \
			call;                                                                      \
			if ((out)->status != WARREN_STATUS_UNAVAILABLE) {                          \
				break;                                                             \
			}                                                                          \
		}                                                                                  \
	} while (0)

void store_get(struct store *s, int64_t id, const char *email, struct outcome *out)
{
	WITH_RETRY(s, out, get_once(s, id, email, out));
}

static void list_once(struct store *s, int64_t after_id, int64_t limit, struct outcome *out)
{
	char after[24], lim[24];
	warren_value *users, *result;
	PGresult *r;
	int n;

	snprintf(after, sizeof(after), "%lld", (long long)after_id);
	snprintf(lim, sizeof(lim), "%lld", (long long)limit);
	r = exec(s, "list", 2, (const char *const[]){after, lim}, out);
	if (r == NULL) {
		return;
	}
	n = PQntuples(r);
	users = warren_array();
	for (int i = 0; i < n; i++) {
		warren_array_push(users, row_to_user(r, i));
	}
	result = warren_map();
	warren_map_set(result, "users", users);
	/* A full page may have more behind it; the cursor is the last id. */
	if (n == limit && n > 0) {
		warren_map_set(result, "next_cursor", warren_str(PQgetvalue(r, n - 1, 0)));
	} else {
		warren_map_set(result, "next_cursor", warren_nil());
	}
	PQclear(r);
	out->result = result;
	out->status = WARREN_STATUS_OK;
}

void store_list(struct store *s, int64_t after_id, int64_t limit, struct outcome *out)
{
	WITH_RETRY(s, out, list_once(s, after_id, limit, out));
}

/* ------------------------------------------------------------ changes */

static void make_change(struct store *s, const struct change *c, struct outcome *out)
{
	char idtext[24], missing[64];
	PGresult *r = NULL;

	snprintf(idtext, sizeof(idtext), "%lld", (long long)c->id);
	snprintf(missing, sizeof(missing), "no user with id %s", idtext);
	switch (c->kind) {
	case CHANGE_CREATE:
		r = exec(s, "create", 3,
		         (const char *const[]){c->email, c->name, c->preferences_json}, out);
		break;
	case CHANGE_UPDATE:
	case CHANGE_SET_PREFERENCES:
		r = exec(s, "update", 4,
		         (const char *const[]){idtext, c->email, c->name, c->preferences_json},
		         out);
		break;
	case CHANGE_DELETE:
		r = exec(s, "delete", 1, (const char *const[]){idtext}, out);
		break;
	}
	if (r != NULL) {
		one_user(r, missing, out);
		PQclear(r);
	}
}

/* An outcome worth remembering for a retried message_id: what the caller
 * was told, not a failure of ours that a retry may cure. */
static bool is_final(warren_status st)
{
	return st != WARREN_STATUS_UNAVAILABLE && st != WARREN_STATUS_INTERNAL &&
	       st != WARREN_STATUS_RESOURCE_EXHAUSTED;
}

static void record(struct store *s, const char *message_id, struct outcome *out)
{
	char status[8], *json = NULL;
	struct outcome rec = {0};
	PGresult *r;

	snprintf(status, sizeof(status), "%d", (int)out->status);
	if (out->result != NULL && warren_value_to_json(out->result, &json, NULL, 0) != WARREN_OK) {
		json = NULL;
	}
	r = exec(s, "record", 4, (const char *const[]){message_id, status, out->message, json},
	         &rec);
	free(json);
	if (r == NULL) {
		warren_value_free(out->result);
		*out = rec;
		return;
	}
	PQclear(r);
}

static void replay(PGresult *r, const char *method, struct outcome *out)
{
	const char *json = PQgetvalue(r, 0, 3);

	if (strcmp(PQgetvalue(r, 0, 0), method) != 0) {
		fail(out, WARREN_STATUS_FAILED_PRECONDITION, "message_id was already used for %s",
		     PQgetvalue(r, 0, 0));
		return;
	}
	out->status = (warren_status)atoi(PQgetvalue(r, 0, 1));
	snprintf(out->message, sizeof(out->message), "%s", PQgetvalue(r, 0, 2));
	if (!PQgetisnull(r, 0, 3) &&
	    warren_value_from_json(json, strlen(json), &out->result, NULL, 0) != WARREN_OK) {
		out->result = NULL;
	}
}

/* true when message_id was new (claimed); false with out set to the stored
 * outcome, or to an error. */
static bool claim(struct store *s, const char *message_id, const char *method, struct outcome *out)
{
	PGresult *r = exec(s, "claim", 2, (const char *const[]){message_id, method}, out);
	bool claimed;

	if (r == NULL) {
		return false;
	}
	claimed = PQntuples(r) == 1;
	PQclear(r);
	if (claimed) {
		return true;
	}
	/* The first request committed (the claim waited for it): answer as it did. */
	r = exec(s, "stored", 1, (const char *const[]){message_id}, out);
	if (r != NULL) {
		replay(r, method, out);
		PQclear(r);
	}
	return false;
}

static void apply_once(struct store *s, const char *message_id, const char *method,
                       const struct change *c, struct outcome *out)
{
	bool recorded = message_id[0] != '\0';

	if (!command(s, "BEGIN", out)) {
		return;
	}
	if (recorded && !claim(s, message_id, method, out)) {
		command(s, is_final(out->status) ? "COMMIT" : "ROLLBACK", &(struct outcome){0});
		return;
	}
	if (recorded && !command(s, "SAVEPOINT change", out)) {
		return;
	}
	make_change(s, c, out);
	if (!is_final(out->status) || (!recorded && out->status != WARREN_STATUS_OK)) {
		command(s, "ROLLBACK", &(struct outcome){0});
		return;
	}
	/* A refused change (duplicate email...) is undone; its answer is kept. */
	if (out->status != WARREN_STATUS_OK &&
	    !command(s, "ROLLBACK TO SAVEPOINT change", &(struct outcome){0})) {
		fail(out, WARREN_STATUS_UNAVAILABLE, "database unavailable during rollback");
		return;
	}
	if (recorded) {
		record(s, message_id, out);
	}
	if (!command(s, "COMMIT", out)) {
		warren_value_free(out->result);
		out->result = NULL;
	}
}

void store_apply(struct store *s, const char *message_id, const char *method,
                 const struct change *c, struct outcome *out)
{
	WITH_RETRY(s, out, apply_once(s, message_id, method, c, out));
}
