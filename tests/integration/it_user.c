/* it_user.c: the user-service daemon against the private broker and the
 * private PostgreSQL: every method and error status, exactly-once changes
 * per message_id, a plain AMQP JSON caller, the database restarted under
 * calls, and SIGTERM with calls in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "testenv.h"

static pid_t service_pid;
static warren_client *client;
static PGconn *db;
static char run_tag[32]; /* makes this run's emails unique in a shared database */

static pid_t start_service(void)
{
	static char conninfo[1024];

	snprintf(conninfo, sizeof(conninfo), "db.conninfo=%s", testenv_db());
	return testenv_spawn_probe("user-service",
	                           (const char *const[]){"-o", conninfo, "-o", "worker.threads=4",
	                                                 "-o", "log.level=warn", NULL},
	                           "user.list", "{\"limit\":1}");
}

static int setup(void **state)
{
	warren_config *cfg = testenv_config(NULL);
	char why[300];

	snprintf(run_tag, sizeof(run_tag), "%ld", (long)getpid());
	service_pid = start_service();
	if (warren_client_new(cfg, "it_user", &client, why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, "client: %s\n", why);
		return -1;
	}
	warren_config_free(cfg);
	db = PQconnectdb(testenv_db());
	return PQstatus(db) == CONNECTION_OK ? 0 : -1;
}

static int teardown(void **state)
{
	warren_client_free(client);
	PQfinish(db);
	if (service_pid > 0) {
		testenv_stop(service_pid, SIGTERM);
	}
	return 0;
}

/* ------------------------------------------------------------ helpers */

static warren_value *json(const char *fmt, ...) WARREN_PRINTF(1, 2);

static warren_value *json(const char *fmt, ...)
{
	char text[2048];
	warren_value *v = NULL;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	assert_int_equal(warren_value_from_json(text, strlen(text), &v, NULL, 0), WARREN_OK);
	return v;
}

/* Calls method; returns the reply (the caller frees it) and checks the
 * status it ended with. */
static warren_reply *call_as(const char *method, warren_value *params, const char *message_id,
                             warren_status want)
{
	warren_call_opts o = {.timeout_ms = 10000, .message_id = message_id};
	warren_reply *reply = NULL;
	char why[300] = "";
	warren_err err = warren_call(client, method, params, &o, &reply, why, sizeof(why));

	if (err != WARREN_OK && err != WARREN_ERR_REMOTE) {
		fail_msg("%s: %s: %s", method, warren_err_str(err), why);
	}
	if (warren_reply_status(reply) != want) {
		fail_msg("%s: got %s (%s), want %s", method,
		         warren_status_name(warren_reply_status(reply)), warren_reply_message(reply),
		         warren_status_name(want));
	}
	warren_value_free(params);
	return reply;
}

static warren_reply *call(const char *method, warren_value *params, warren_status want)
{
	return call_as(method, params, NULL, want);
}

static void expect_error(const char *method, warren_value *params, warren_status status,
                         const char *message)
{
	warren_reply *reply = call(method, params, status);

	assert_string_equal(warren_reply_message(reply), message);
	warren_reply_free(reply);
}

static int64_t int_field(const warren_value *v, const char *name)
{
	int64_t n = -1;

	assert_true(warren_value_get_int(warren_map_get(v, name), &n));
	return n;
}

static const char *str_field(const warren_value *v, const char *name)
{
	const char *s = NULL;
	size_t len;

	assert_true(warren_value_get_str(warren_map_get(v, name), &s, &len));
	return s;
}

static void assert_json(const warren_value *v, const char *want)
{
	char *text = NULL;

	assert_int_equal(warren_value_to_json(v, &text, NULL, 0), WARREN_OK);
	assert_string_equal(text, want);
	free(text);
}

/* Creates a user with a unique email built from name; returns its id. */
static int64_t create_user(const char *name, char *email, size_t cap)
{
	warren_reply *reply;
	int64_t id;

	snprintf(email, cap, "%s.%s@example.org", name, run_tag);
	reply = call("user.create", json("{\"email\":\"%s\",\"name\":\"%s\"}", email, name),
	             WARREN_STATUS_OK);
	id = int_field(warren_reply_result(reply), "id");
	warren_reply_free(reply);
	return id;
}

static long rows(const char *sql_fmt, const char *arg)
{
	char sql[512];
	PGresult *r;
	long n;

	snprintf(sql, sizeof(sql), sql_fmt, arg);
	r = PQexec(db, sql);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return n;
}

/* ------------------------------------------------------------ methods */

static void test_create_returns_the_user_with_an_id_and_empty_preferences(void **state)
{
	char email[128];
	warren_reply *reply;
	const warren_value *u;

	snprintf(email, sizeof(email), "ada.%s@example.org", run_tag);
	reply = call("user.create", json("{\"email\":\"%s\",\"name\":\"Ada\"}", email),
	             WARREN_STATUS_OK);
	u = warren_reply_result(reply);
	assert_true(int_field(u, "id") > 0);
	assert_string_equal(str_field(u, "email"), email);
	assert_string_equal(str_field(u, "name"), "Ada");
	assert_json(warren_map_get(u, "preferences"), "{}");
	warren_reply_free(reply);
}

static void test_get_by_id_and_by_email_in_any_case_find_the_same_user(void **state)
{
	char email[128], upper[128];
	int64_t id = create_user("grace", email, sizeof(email));
	warren_reply *a, *b;

	for (size_t i = 0; i <= strlen(email); i++) {
		upper[i] = (char)(email[i] >= 'a' && email[i] <= 'z' ? email[i] - 32 : email[i]);
	}
	a = call("user.get", json("{\"id\":%lld}", (long long)id), WARREN_STATUS_OK);
	b = call("user.get", json("{\"email\":\"%s\"}", upper), WARREN_STATUS_OK);
	assert_true(warren_value_equal(warren_reply_result(a), warren_reply_result(b)));
	assert_string_equal(str_field(warren_reply_result(a), "name"), "grace");
	warren_reply_free(a);
	warren_reply_free(b);
}

static void test_unknown_user_is_not_found(void **state)
{
	expect_error("user.get", json("{\"id\":999999999}"), WARREN_STATUS_NOT_FOUND,
	             "no user with id 999999999");
	expect_error("user.get", json("{\"email\":\"nobody@nowhere.example\"}"),
	             WARREN_STATUS_NOT_FOUND, "no user with email nobody@nowhere.example");
	expect_error("user.delete", json("{\"id\":999999999}"), WARREN_STATUS_NOT_FOUND,
	             "no user with id 999999999");
	expect_error("user.update", json("{\"id\":999999999,\"name\":\"x\"}"),
	             WARREN_STATUS_NOT_FOUND, "no user with id 999999999");
	expect_error("user.preferences.get", json("{\"id\":999999999}"), WARREN_STATUS_NOT_FOUND,
	             "no user with id 999999999");
}

static void test_a_duplicate_email_is_already_exists(void **state)
{
	char email[128];

	create_user("alan", email, sizeof(email));
	expect_error("user.create", json("{\"email\":\"%s\",\"name\":\"Alan 2\"}", email),
	             WARREN_STATUS_ALREADY_EXISTS, "a user with this email already exists");
}

static void test_bad_parameters_are_invalid_argument_naming_the_field(void **state)
{
	const warren_status bad = WARREN_STATUS_INVALID_ARGUMENT;

	expect_error("user.create", json("{\"name\":\"x\"}"), bad, "field email: required");
	expect_error("user.create", json("{\"email\":\"a@b.c\",\"name\":42}"), bad,
	             "field name: expected string, got integer");
	expect_error("user.create", json("{\"email\":\"nope\",\"name\":\"x\"}"), bad,
	             "field email: \"nope\" is not an email address");
	expect_error("user.create", json("{\"email\":\"a@b.c\",\"name\":\"x\",\"age\":3}"), bad,
	             "unknown field \"age\"");
	expect_error("user.create", json("{\"email\":\"a@b.c\",\"name\":\"\"}"), bad,
	             "field name: must be 1 to 200 bytes without control characters");
	expect_error("user.create", json("{\"email\":\"a@b.c\",\"name\":\"x\",\"preferences\":[]}"),
	             bad, "field preferences: expected map, got array");
	expect_error("user.get", json("[1]"), bad, "params: expected a map, got array");
	expect_error("user.get", json("{}"), bad, "field id or field email: required");
	expect_error("user.get", json("{\"id\":1,\"email\":\"a@b.c\"}"), bad,
	             "give field id or field email, not both");
	expect_error("user.get", json("{\"id\":0}"), bad,
	             "field id: 0 is out of range 1..9223372036854775807");
	expect_error("user.update", json("{\"id\":1}"), bad,
	             "nothing to update: give field email, name or preferences");
	expect_error("user.list", json("{\"limit\":0}"), bad, "field limit: 0 is out of range 1..1000");
	expect_error("user.list", json("{\"cursor\":\"abc\"}"), bad,
	             "field cursor: \"abc\" is not a cursor from user.list");
	expect_error("user.preferences.set", json("{\"id\":1}"), bad, "field preferences: required");
}

static void test_update_changes_only_the_fields_given(void **state)
{
	char email[128];
	int64_t id = create_user("barbara", email, sizeof(email));
	warren_reply *reply;

	reply = call("user.update", json("{\"id\":%lld,\"name\":\"Barbara Liskov\"}", (long long)id),
	             WARREN_STATUS_OK);
	assert_string_equal(str_field(warren_reply_result(reply), "name"), "Barbara Liskov");
	assert_string_equal(str_field(warren_reply_result(reply), "email"), email);
	warren_reply_free(reply);
}

static void test_delete_removes_the_user(void **state)
{
	char email[128], missing[200];
	int64_t id = create_user("ken", email, sizeof(email));

	warren_reply_free(call("user.delete", json("{\"id\":%lld}", (long long)id), WARREN_STATUS_OK));
	snprintf(missing, sizeof(missing), "no user with email %s", email);
	expect_error("user.get", json("{\"email\":\"%s\"}", email), WARREN_STATUS_NOT_FOUND,
	             missing);
}

static void test_list_pages_through_every_user_in_id_order(void **state)
{
	char email[128], cursor[32] = "";
	int64_t ids[5], last = 0;
	int found = 0;

	for (int i = 0; i < 5; i++) {
		char name[16];

		snprintf(name, sizeof(name), "page%d", i);
		ids[i] = create_user(name, email, sizeof(email));
	}
	do {
		warren_reply *reply =
			cursor[0] == '\0'
				? call("user.list", json("{\"limit\":2}"), WARREN_STATUS_OK)
				: call("user.list", json("{\"limit\":2,\"cursor\":\"%s\"}", cursor),
				       WARREN_STATUS_OK);
		const warren_value *page = warren_reply_result(reply);
		const warren_value *users = warren_map_get(page, "users");
		const warren_value *next = warren_map_get(page, "next_cursor");

		assert_true(warren_value_len(users) <= 2);
		for (size_t i = 0; i < warren_value_len(users); i++) {
			int64_t id = int_field(warren_array_at(users, i), "id");

			assert_true(id > last);
			last = id;
			for (int k = 0; k < 5; k++) {
				found += id == ids[k];
			}
		}
		cursor[0] = '\0';
		if (warren_value_type(next) == WARREN_STR) {
			snprintf(cursor, sizeof(cursor), "%s", str_field(page, "next_cursor"));
		}
		warren_reply_free(reply);
	} while (cursor[0] != '\0');
	assert_int_equal(found, 5);
}

static void test_preferences_are_set_and_read_back(void **state)
{
	char email[128];
	int64_t id = create_user("barbara2", email, sizeof(email));
	warren_reply *reply;

	reply = call("user.preferences.set",
	             json("{\"id\":%lld,\"preferences\":{\"channel\":\"sms\",\"quiet\":true}}",
	                  (long long)id),
	             WARREN_STATUS_OK);
	assert_json(warren_reply_result(reply), "{\"quiet\":true,\"channel\":\"sms\"}");
	warren_reply_free(reply);
	reply = call("user.preferences.get", json("{\"id\":%lld}", (long long)id), WARREN_STATUS_OK);
	assert_json(warren_reply_result(reply), "{\"quiet\":true,\"channel\":\"sms\"}");
	warren_reply_free(reply);
}

/* ------------------------------------------------------------ exactly once */

static void test_the_same_message_id_twice_makes_one_row_and_the_same_reply(void **state)
{
	char email[128], mid[64];
	warren_reply *a, *b;

	snprintf(email, sizeof(email), "once.%s@example.org", run_tag);
	snprintf(mid, sizeof(mid), "it-user-once-%s", run_tag);
	a = call_as("user.create", json("{\"email\":\"%s\",\"name\":\"Once\"}", email), mid,
	            WARREN_STATUS_OK);
	b = call_as("user.create", json("{\"email\":\"%s\",\"name\":\"Once\"}", email), mid,
	            WARREN_STATUS_OK);
	assert_true(warren_value_equal(warren_reply_result(a), warren_reply_result(b)));
	assert_int_equal(rows("SELECT count(*) FROM users WHERE email = '%s'", email), 1);
	warren_reply_free(a);
	warren_reply_free(b);
}

static void test_a_refusal_is_remembered_for_its_message_id_too(void **state)
{
	char email[128], mid[64];
	warren_reply *reply;

	create_user("dup", email, sizeof(email));
	snprintf(mid, sizeof(mid), "it-user-refused-%s", run_tag);
	for (int i = 0; i < 2; i++) {
		reply = call_as("user.create", json("{\"email\":\"%s\",\"name\":\"D\"}", email), mid,
		                WARREN_STATUS_ALREADY_EXISTS);
		assert_string_equal(warren_reply_message(reply), "a user with this email already exists");
		warren_reply_free(reply);
	}
}

static void test_a_message_id_reused_for_another_method_is_refused(void **state)
{
	char email[128], mid[64];
	int64_t id = create_user("reuse", email, sizeof(email));
	warren_reply *reply;

	snprintf(mid, sizeof(mid), "it-user-reuse-%s", run_tag);
	warren_reply_free(call_as("user.update",
	                          json("{\"id\":%lld,\"name\":\"R\"}", (long long)id), mid,
	                          WARREN_STATUS_OK));
	reply = call_as("user.delete", json("{\"id\":%lld}", (long long)id), mid,
	                WARREN_STATUS_FAILED_PRECONDITION);
	assert_string_equal(warren_reply_message(reply), "message_id was already used for user.update");
	warren_reply_free(reply);
}

/* ------------------------------------------------------------ a plain AMQP caller */

static void test_a_plain_amqp_client_json_request_gets_a_json_reply(void **state)
{
	struct raw *r = raw_connect();
	const char *body = "{\"id\":999999998}";
	amqp_basic_properties_t p = {0};
	amqp_envelope_t env;

	assert_int_equal(raw_consume_replies(r), 0);
	p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
	           AMQP_BASIC_REPLY_TO_FLAG;
	p.content_type = amqp_cstring_bytes("application/json");
	p.correlation_id = amqp_cstring_bytes("plain-1");
	p.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
	assert_int_equal(raw_publish(r, "user.get", &p, body, strlen(body)), 0);
	assert_int_equal(raw_wait(r, 5000, &env), 0);
	assert_memory_equal(env.message.properties.content_type.bytes, "application/json", 16);
	const char *want = "{\"code\":\"NOT_FOUND\",\"message\":\"no user with id 999999998\"}";
	assert_int_equal((int)env.message.body.len, (int)strlen(want));
	assert_memory_equal(env.message.body.bytes, want, strlen(want));
	amqp_destroy_envelope(&env);
	raw_close(r);
}

/* ------------------------------------------------------------ faults */

/* Creates one user per message_id, calling again with the same message_id
 * while the answer is UNAVAILABLE (the database is away), as a caller that
 * must not lose the request does. */
struct writer {
	int from, count;
	int ok, unavailable_seen, failed;
};

static void *write_users(void *arg)
{
	struct writer *w = arg;

	for (int i = w->from; i < w->from + w->count; i++) {
		char email[128], mid[64];
		warren_call_opts o = {.timeout_ms = 5000, .message_id = mid};
		warren_value *p;
		warren_status st = WARREN_STATUS_UNAVAILABLE;

		snprintf(email, sizeof(email), "restart%d.%s@example.org", i, run_tag);
		snprintf(mid, sizeof(mid), "it-user-restart-%d-%s", i, run_tag);
		p = json("{\"email\":\"%s\",\"name\":\"R\"}", email);
		for (int attempt = 0; attempt < 100 && st != WARREN_STATUS_OK; attempt++) {
			warren_reply *reply = NULL;
			warren_err err = warren_call(client, "user.create", p, &o, &reply, NULL, 0);

			st = err == WARREN_OK || err == WARREN_ERR_REMOTE ? warren_reply_status(reply)
			                                                  : WARREN_STATUS_UNAVAILABLE;
			if (st == WARREN_STATUS_UNAVAILABLE) {
				w->unavailable_seen++;
				usleep(100000);
			}
			warren_reply_free(reply);
		}
		w->ok += st == WARREN_STATUS_OK;
		w->failed += st != WARREN_STATUS_OK;
		warren_value_free(p);
	}
	return NULL;
}

static void test_database_restarted_during_calls_loses_nothing_and_dead_letters_nothing(void **state)
{
	struct writer w = {.from = 0, .count = 200};
	struct raw *r = raw_connect();
	char cmd[1024], like[64];
	pthread_t t;

	long dead_before = raw_queue_count(r, "rpc.user.dlq");
	pthread_create(&t, NULL, write_users, &w);
	usleep(300000);
	snprintf(cmd, sizeof(cmd), "tests/lib/postgres.sh restart '%s'", getenv("WARREN_TEST_PG_DIR"));
	assert_int_equal(system(cmd), 0);
	pthread_join(t, NULL);
	printf("# database restart: %d created, %d UNAVAILABLE answers retried, %d failed\n", w.ok,
	       w.unavailable_seen, w.failed);
	PQreset(db);
	snprintf(like, sizeof(like), "restart%%.%s@example.org", run_tag);
	assert_int_equal(w.ok, w.count);
	assert_int_equal(rows("SELECT count(*) FROM users WHERE email LIKE '%s'", like), w.count);
	assert_int_equal(raw_queue_count(r, "rpc.user.dlq"), dead_before);
	raw_close(r);
}

struct inflight {
	pthread_mutex_t mu;
	int ended, ok;
};

static void count_end(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct inflight *f = arg;

	pthread_mutex_lock(&f->mu);
	f->ended++;
	f->ok += err == WARREN_OK;
	pthread_mutex_unlock(&f->mu);
	warren_reply_free(reply);
}

static void test_sigterm_with_calls_in_flight_answers_every_call(void **state)
{
	struct inflight f = {.mu = PTHREAD_MUTEX_INITIALIZER};
	enum { CALLS = 300 };
	char like[64];
	int ended;

	for (int i = 0; i < CALLS; i++) {
		char email[128];
		warren_call_opts o = {.timeout_ms = 30000};
		warren_value *p;

		snprintf(email, sizeof(email), "term%d.%s@example.org", i, run_tag);
		p = json("{\"email\":\"%s\",\"name\":\"T\"}", email);
		assert_int_equal(warren_call_async(client, "user.create", p, &o, count_end, &f, NULL, 0),
		                 WARREN_OK);
		warren_value_free(p);
		if (i == CALLS / 3) {
			assert_int_equal(testenv_stop(service_pid, SIGTERM), 0);
			service_pid = start_service();
		}
	}
	for (int i = 0; i < 600; i++) {
		pthread_mutex_lock(&f.mu);
		ended = f.ended;
		pthread_mutex_unlock(&f.mu);
		if (ended == CALLS) {
			break;
		}
		usleep(50000);
	}
	snprintf(like, sizeof(like), "term%%.%s@example.org", run_tag);
	printf("# SIGTERM under load: %d calls, %d ended, %d OK\n", CALLS, f.ended, f.ok);
	assert_int_equal(f.ended, CALLS);
	assert_int_equal(f.ok, CALLS);
	assert_int_equal(rows("SELECT count(*) FROM users WHERE email LIKE '%s'", like), CALLS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_returns_the_user_with_an_id_and_empty_preferences),
		cmocka_unit_test(test_get_by_id_and_by_email_in_any_case_find_the_same_user),
		cmocka_unit_test(test_unknown_user_is_not_found),
		cmocka_unit_test(test_a_duplicate_email_is_already_exists),
		cmocka_unit_test(test_bad_parameters_are_invalid_argument_naming_the_field),
		cmocka_unit_test(test_update_changes_only_the_fields_given),
		cmocka_unit_test(test_delete_removes_the_user),
		cmocka_unit_test(test_list_pages_through_every_user_in_id_order),
		cmocka_unit_test(test_preferences_are_set_and_read_back),
		cmocka_unit_test(test_the_same_message_id_twice_makes_one_row_and_the_same_reply),
		cmocka_unit_test(test_a_refusal_is_remembered_for_its_message_id_too),
		cmocka_unit_test(test_a_message_id_reused_for_another_method_is_refused),
		cmocka_unit_test(test_a_plain_amqp_client_json_request_gets_a_json_reply),
		cmocka_unit_test(test_database_restarted_during_calls_loses_nothing_and_dead_letters_nothing),
		cmocka_unit_test(test_sigterm_with_calls_in_flight_answers_every_call),
	};

	return cmocka_run_group_tests_name("it_user", tests, setup, teardown);
}
