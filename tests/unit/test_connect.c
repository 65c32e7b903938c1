/* test_connect.c: the one connection stack (connect.c) under the engine and
 * the tools: the walk over the URL list, the login it makes, and how a
 * broker's refusal reads. rabbitmq-c is mocked with -Wl,--wrap (see
 * WRAP_test_connect in the Makefile), so that a broker can refuse on
 * demand; TLS setup runs for real against files that are not there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "connect.h"
#include "warren.h"

/* The wraps fake_open.h declares, defined here with scripts of their own
 * (this test refuses and fails on purpose; it does not link fake_open.o). */
#include "fake_open.h"

amqp_rpc_reply_t __wrap_amqp_get_rpc_reply(amqp_connection_state_t c);
int __wrap_amqp_send_method(amqp_connection_state_t c, amqp_channel_t ch, amqp_method_number_t id,
                            void *decoded);

/* What the mocks answer, and what they saw. */
static struct {
	int open_results[4]; /* amqp_socket_open_noblock, attempt by attempt */
	int open_ports[4];
	int opens;
	amqp_rpc_reply_t login_reply;
	int logins, login_heartbeat;
	char login_vhost[64], login_user[64], login_password[64], login_name[64];
	bool login_capabilities; /* a "capabilities" table with both set */
	bool channel_refused;    /* amqp_channel_open answers NULL */
	int channel_opens, confirm_selects;
	amqp_rpc_reply_t rpc_reply; /* amqp_get_rpc_reply */
	int sent;                   /* amqp_send_method */
	amqp_channel_t sent_channel;
	amqp_method_number_t sent_id;
} script;

static amqp_channel_open_ok_t channel_ok;
static amqp_confirm_select_ok_t confirm_ok;

int __wrap_amqp_socket_open_noblock(amqp_socket_t *s, const char *host, int port,
                                    const struct timeval *tv)
{
	int i = script.opens++;

	if (i >= 4) {
		return AMQP_STATUS_SOCKET_ERROR;
	}
	script.open_ports[i] = port;
	return script.open_results[i];
}

static void copy_bytes(char *dst, size_t cap, amqp_bytes_t b)
{
	snprintf(dst, cap, "%.*s", (int)b.len, (const char *)b.bytes);
}

/* Both capabilities the engine handles, set to true. */
static bool has_capabilities(const amqp_table_t *caps)
{
	int found = 0;

	for (int i = 0; i < caps->num_entries; i++) {
		const amqp_table_entry_t *e = &caps->entries[i];
		char key[64];

		copy_bytes(key, sizeof(key), e->key);
		if ((strcmp(key, "consumer_cancel_notify") == 0 ||
		     strcmp(key, "connection.blocked") == 0) &&
		    e->value.kind == AMQP_FIELD_KIND_BOOLEAN && e->value.value.boolean) {
			found++;
		}
	}
	return found == 2;
}

static void record_props(const amqp_table_t *props)
{
	for (int i = 0; i < props->num_entries; i++) {
		const amqp_table_entry_t *e = &props->entries[i];
		char key[64];

		copy_bytes(key, sizeof(key), e->key);
		if (strcmp(key, "connection_name") == 0 && e->value.kind == AMQP_FIELD_KIND_UTF8) {
			copy_bytes(script.login_name, sizeof(script.login_name),
			           e->value.value.bytes);
		} else if (strcmp(key, "capabilities") == 0 &&
		           e->value.kind == AMQP_FIELD_KIND_TABLE) {
			script.login_capabilities = has_capabilities(&e->value.value.table);
		}
	}
}

amqp_rpc_reply_t __wrap_amqp_login_with_properties(amqp_connection_state_t c, const char *vhost,
                                                   int channel_max, int frame_max, int heartbeat,
                                                   const amqp_table_t *props,
                                                   amqp_sasl_method_enum method, ...)
{
	va_list ap;

	script.logins++;
	script.login_heartbeat = heartbeat;
	snprintf(script.login_vhost, sizeof(script.login_vhost), "%s", vhost);
	va_start(ap, method);
	snprintf(script.login_user, sizeof(script.login_user), "%s", va_arg(ap, const char *));
	snprintf(script.login_password, sizeof(script.login_password), "%s",
	         va_arg(ap, const char *));
	va_end(ap);
	record_props(props);
	return script.login_reply;
}

amqp_channel_open_ok_t *__wrap_amqp_channel_open(amqp_connection_state_t c, amqp_channel_t ch)
{
	script.channel_opens++;
	assert_int_equal(ch, CONNECT_CHANNEL);
	return script.channel_refused ? NULL : &channel_ok;
}

amqp_confirm_select_ok_t *__wrap_amqp_confirm_select(amqp_connection_state_t c, amqp_channel_t ch)
{
	script.confirm_selects++;
	assert_int_equal(ch, CONNECT_CHANNEL);
	return &confirm_ok;
}

amqp_rpc_reply_t __wrap_amqp_get_rpc_reply(amqp_connection_state_t c)
{
	return script.rpc_reply;
}

int __wrap_amqp_send_method(amqp_connection_state_t c, amqp_channel_t ch, amqp_method_number_t id,
                            void *decoded)
{
	script.sent++;
	script.sent_channel = ch;
	script.sent_id = id;
	return AMQP_STATUS_OK;
}

/* A reply text as the broker sends it (no NUL counted). */
#define TEXT(s)                                                                                    \
	{                                                                                          \
		.len = sizeof(s) - 1, .bytes = (void *)(s)                                         \
	}

static amqp_connection_close_t refused_login = {
    .reply_code = 403,
    .reply_text = TEXT("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"),
};

static amqp_channel_close_t refused_channel = {
    .reply_code = 406,
    .reply_text = TEXT("PRECONDITION_FAILED - fast reply consumer does not exist"),
};

static amqp_connection_close_t forced = {
    .reply_code = 320,
    .reply_text = TEXT("CONNECTION_FORCED - broker forced connection closure"),
};

static amqp_rpc_reply_t server_said(amqp_method_number_t id, void *decoded)
{
	amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION};

	r.reply.id = id;
	r.reply.decoded = decoded;
	return r;
}

static int reset_script(void **state)
{
	memset(&script, 0, sizeof(script));
	script.login_reply.reply_type = AMQP_RESPONSE_NORMAL;
	return 0;
}

static struct connect_config config(const char *urls)
{
	return (struct connect_config){.urls = urls, .name = "t", .timeout_ms = 200};
}

static struct connect_target *target(const struct connect_config *cc)
{
	struct connect_target *t = NULL;
	char why[300] = "";

	assert_int_equal(connect_target_new(cc, &t, why, sizeof(why)), WARREN_OK);
	assert_string_equal(why, "");
	return t;
}

#define TWO_URLS "amqp://a:b@127.0.0.1:5998/,amqp://a:b@127.0.0.1:5997/"

static void test_a_tool_walks_the_list_until_a_broker_answers(void **state)
{
	struct connect_config cc = config(TWO_URLS);
	struct connect_target *t = target(&cc);
	amqp_connection_state_t c = NULL;
	char why[300];

	script.open_results[0] = AMQP_STATUS_SOCKET_ERROR;
	script.open_results[1] = AMQP_STATUS_OK;
	assert_int_equal(connect_first(t, &c, why, sizeof(why)), WARREN_OK);
	assert_non_null(c);
	assert_int_equal(script.opens, 2);
	assert_int_equal(script.open_ports[0], 5998);
	assert_int_equal(script.open_ports[1], 5997);
	assert_int_equal(connect_current(t)->port, 5997);
	/* Logged in to the second only, and channel 1 is in confirm mode. */
	assert_int_equal(script.logins, 1);
	assert_int_equal(script.channel_opens, 1);
	assert_int_equal(script.confirm_selects, 1);
	amqp_destroy_connection(c);
	connect_target_free(t);
}

static void test_when_no_broker_answers_every_reason_is_given(void **state)
{
	struct connect_config cc = config(TWO_URLS);
	struct connect_target *t = target(&cc);
	amqp_connection_state_t c = (amqp_connection_state_t)1;
	char why[300];

	script.open_results[0] = AMQP_STATUS_SOCKET_ERROR;
	script.open_results[1] = AMQP_STATUS_SOCKET_ERROR;
	assert_int_equal(connect_first(t, &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_null(c);
	assert_string_equal(why, "cannot connect to 127.0.0.1:5998: a socket error occurred; "
	                         "cannot connect to 127.0.0.1:5997: a socket error occurred");
	connect_target_free(t);
}

/* The engine's failover order: one URL per attempt, round and round. */
static void test_the_engine_takes_the_urls_in_turn_round_and_round(void **state)
{
	struct connect_config cc = config(TWO_URLS);
	struct connect_target *t = target(&cc);
	amqp_connection_state_t c = NULL;
	char why[300];

	script.open_results[0] = AMQP_STATUS_SOCKET_ERROR;
	script.open_results[1] = AMQP_STATUS_SOCKET_ERROR;
	script.open_results[2] = AMQP_STATUS_OK;
	assert_int_equal(connect_target_count(t), 2);
	assert_int_equal(connect_next(t, &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_string_equal(why, "cannot connect to 127.0.0.1:5998: a socket error occurred");
	assert_int_equal(connect_next(t, &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_string_equal(why, "cannot connect to 127.0.0.1:5997: a socket error occurred");
	assert_int_equal(connect_next(t, &c, why, sizeof(why)), WARREN_OK);
	assert_int_equal(script.open_ports[2], 5998);
	assert_int_equal(connect_current(t)->port, 5998);
	amqp_destroy_connection(c);
	connect_target_free(t);
}

static void test_a_refused_login_is_described_and_answered(void **state)
{
	struct connect_config cc = config("amqp://guest:wrong@127.0.0.1:5996/");
	struct connect_target *t = target(&cc);
	amqp_connection_state_t c = NULL;
	char why[300];

	script.login_reply = server_said(AMQP_CONNECTION_CLOSE_METHOD, &refused_login);
	assert_int_equal(connect_next(t, &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_null(c);
	assert_string_equal(why, "login to 127.0.0.1:5996: 403 ACCESS_REFUSED - Login was refused "
	                         "using authentication mechanism PLAIN");
	/* The broker's connection.close gets its close-ok. */
	assert_int_equal(script.sent, 1);
	assert_int_equal(script.sent_channel, 0);
	assert_int_equal(script.sent_id, AMQP_CONNECTION_CLOSE_OK_METHOD);
	assert_int_equal(script.channel_opens, 0);
	connect_target_free(t);
}

static void test_a_login_failing_in_rabbitmq_c_names_its_error(void **state)
{
	struct connect_config cc = config("amqp://guest:guest@127.0.0.1:5996/");
	struct connect_target *t = target(&cc);
	amqp_connection_state_t c = NULL;
	char why[300];

	script.login_reply.reply_type = AMQP_RESPONSE_LIBRARY_EXCEPTION;
	script.login_reply.library_error = AMQP_STATUS_CONNECTION_CLOSED;
	assert_int_equal(connect_next(t, &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_string_equal(why, "login to 127.0.0.1:5996: connection closed unexpectedly");
	assert_int_equal(script.sent, 0);
	connect_target_free(t);
}

/* The engine asks for what it handles (and its heartbeat); a tool asks for
 * neither. broker.vhost wins over the URL's, "amqp://h/" means "/", and
 * broker.password_file over the URL's password. */
static void test_the_login_carries_the_owners_properties(void **state)
{
	struct connect_config cc = config("amqp://warren:url-pw@127.0.0.1:5995/");
	struct connect_target *t;
	amqp_connection_state_t c = NULL;
	char why[300], pwfile[] = "/tmp/test_connect.XXXXXX";
	int fd = mkstemp(pwfile);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "file-pw\n", 8), 8);
	close(fd);
	cc.heartbeat_s = 7;
	cc.capabilities = true;
	t = target(&cc);
	assert_int_equal(connect_next(t, &c, why, sizeof(why)), WARREN_OK);
	assert_int_equal(script.login_heartbeat, 7);
	assert_true(script.login_capabilities);
	assert_string_equal(script.login_name, "t");
	assert_string_equal(script.login_vhost, "/");
	assert_string_equal(script.login_user, "warren");
	assert_string_equal(script.login_password, "url-pw");
	amqp_destroy_connection(c);
	connect_target_free(t);

	cc = config("amqp://warren:url-pw@127.0.0.1:5995/v1");
	cc.name = "rpc-dlq";
	cc.vhost = "v2";
	cc.password_file = pwfile;
	t = target(&cc);
	script.login_capabilities = false;
	assert_int_equal(connect_next(t, &c, why, sizeof(why)), WARREN_OK);
	assert_int_equal(script.login_heartbeat, 0);
	assert_false(script.login_capabilities);
	assert_string_equal(script.login_name, "rpc-dlq");
	assert_string_equal(script.login_vhost, "v2");
	assert_string_equal(script.login_password, "file-pw");
	amqp_destroy_connection(c);
	connect_target_free(t);
	unlink(pwfile);
}

static void test_a_refused_channel_is_described_as_the_brokers_channel_close(void **state)
{
	struct connect_config cc = config("amqp://a:b@127.0.0.1:5994/");
	struct connect_target *t = target(&cc);
	amqp_connection_state_t c = NULL;
	char why[300];

	script.channel_refused = true;
	script.rpc_reply = server_said(AMQP_CHANNEL_CLOSE_METHOD, &refused_channel);
	/* Connecting: the connection is of no use without its channel. */
	assert_int_equal(connect_next(t, &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_null(c);
	assert_string_equal(
	    why, "channel.open: 406 PRECONDITION_FAILED - fast reply consumer does not exist");
	assert_int_equal(script.sent_channel, CONNECT_CHANNEL);
	assert_int_equal(script.sent_id, AMQP_CHANNEL_CLOSE_OK_METHOD);
	/* Reopening on a live connection: the broker refused only the channel. */
	assert_int_equal(connect_open_channel((amqp_connection_state_t)1, why, sizeof(why)),
	                 WARREN_ERR_BROKER);
	assert_int_equal(script.sent, 2);
	connect_target_free(t);
}

static void test_a_close_the_broker_sends_unasked_is_described_and_answered(void **state)
{
	amqp_frame_t f = {.frame_type = AMQP_FRAME_METHOD, .channel = CONNECT_CHANNEL};
	char why[300];

	f.payload.method.id = AMQP_CHANNEL_CLOSE_METHOD;
	f.payload.method.decoded = &refused_channel;
	assert_int_equal(connect_closed_by_broker((amqp_connection_state_t)1, &f, why, sizeof(why)),
	                 WARREN_ERR_BROKER);
	assert_string_equal(why, "channel closed by the broker: 406 PRECONDITION_FAILED - fast "
	                         "reply consumer does not exist");
	assert_int_equal(script.sent_channel, CONNECT_CHANNEL);
	assert_int_equal(script.sent_id, AMQP_CHANNEL_CLOSE_OK_METHOD);

	f.channel = 0;
	f.payload.method.id = AMQP_CONNECTION_CLOSE_METHOD;
	f.payload.method.decoded = &forced;
	assert_int_equal(connect_closed_by_broker((amqp_connection_state_t)1, &f, why, sizeof(why)),
	                 WARREN_ERR_TRANSPORT);
	assert_string_equal(why, "connection closed by the broker: 320 CONNECTION_FORCED - broker "
	                         "forced connection closure");
	assert_int_equal(script.sent_channel, 0);
	assert_int_equal(script.sent_id, AMQP_CONNECTION_CLOSE_OK_METHOD);
}

static void test_every_kind_of_failed_reply_reads_as_one_line(void **state)
{
	amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_LIBRARY_EXCEPTION,
	                      .library_error = AMQP_STATUS_SOCKET_ERROR};
	char why[300];

	connect_describe_reply(r, "basic.get", why, sizeof(why));
	assert_string_equal(why, "basic.get: a socket error occurred");
	r.reply_type = AMQP_RESPONSE_NONE;
	connect_describe_reply(r, "basic.get", why, sizeof(why));
	assert_string_equal(why, "basic.get: no reply from the broker");
	/* A reply with no failure in it does not say "ok" in an error. */
	r.reply_type = AMQP_RESPONSE_NORMAL;
	connect_describe_reply(r, "declaring the fast lane", why, sizeof(why));
	assert_string_equal(why, "declaring the fast lane: no reply from the broker");
	r = server_said(AMQP_BASIC_CANCEL_METHOD, NULL);
	connect_describe_reply(r, "queue.declare", why, sizeof(why));
	assert_string_equal(why, "queue.declare: unexpected method 0x003c001e");
	/* A library error is not the broker's: nothing to answer. */
	r.reply_type = AMQP_RESPONSE_LIBRARY_EXCEPTION;
	assert_int_equal(
	    connect_refusal((amqp_connection_state_t)1, CONNECT_CHANNEL, r, "x", why, sizeof(why)),
	    WARREN_ERR_TRANSPORT);
	assert_int_equal(script.sent, 0);
}

/* A TLS file that cannot be used is the configuration's fault: refused
 * before any socket opens, and the walk of a tool stops there. */
static void test_a_tls_setup_failure_is_a_config_error_before_any_socket(void **state)
{
	struct connect_config cc =
	    config("amqps://a:b@broker.example:5671/,amqp://a:b@127.0.0.1:5993/");
	struct connect_target *t;
	amqp_connection_state_t c = NULL;
	char why[300];

	cc.tls_ca = "/nonexistent/ca.pem";
	t = target(&cc);
	assert_int_equal(connect_first(t, &c, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_null(c);
	assert_string_equal(
	    why, "broker.tls_ca: /nonexistent/ca.pem: not a readable PEM file of certificates");
	assert_int_equal(script.opens, 0);
	connect_target_free(t);

	cc.tls_ca = "";
	cc.tls_cert = "/nonexistent/client.pem";
	cc.tls_key = "/nonexistent/client.key";
	t = target(&cc);
	assert_int_equal(connect_next(t, &c, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_string_equal(why, "broker.tls_cert, broker.tls_key: /nonexistent/client.pem and "
	                         "/nonexistent/client.key are not a certificate and its key");
	assert_int_equal(script.opens, 0);
	connect_target_free(t);
}

static void test_an_unparsable_url_anywhere_is_refused_before_connecting(void **state)
{
	struct connect_config cc =
	    config("amqp://h1/,amqp://warren:pw-connect-unit@localhost:56x72/");
	struct connect_target *t = (struct connect_target *)1;
	char why[300];

	assert_int_equal(connect_target_new(&cc, &t, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_null(t);
	assert_string_equal(why, "broker.url: cannot parse \"amqp://warren:***@localhost:56x72/\"");
	cc = config(",");
	assert_int_equal(connect_target_new(&cc, &t, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_string_equal(why, "broker.url: no URL given");
	cc = config("amqp://h1/");
	cc.password_file = "/nonexistent/pw";
	assert_int_equal(connect_target_new(&cc, &t, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_string_equal(why,
	                    "broker.password_file: /nonexistent/pw: No such file or directory");
	assert_int_equal(script.opens, 0);
}

static void test_the_broker_keys_make_the_connect_config(void **state)
{
	warren_config *cfg = warren_config_new();
	struct connect_config cc;

	assert_int_equal(warren_config_set(cfg, "broker.url", TWO_URLS, NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "broker.heartbeat", "7s", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "broker.connect_timeout", "1500ms", NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "broker.tls_verify", "false", NULL, 0), WARREN_OK);
	cc = connect_config_of(cfg, "n");
	assert_string_equal(cc.urls, TWO_URLS);
	assert_string_equal(cc.name, "n");
	assert_int_equal(cc.heartbeat_s, 7);
	assert_int_equal(cc.timeout_ms, 1500);
	assert_false(cc.tls_verify);
	assert_false(cc.capabilities);
	warren_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_a_tool_walks_the_list_until_a_broker_answers, reset_script),
	    cmocka_unit_test_setup(test_when_no_broker_answers_every_reason_is_given, reset_script),
	    cmocka_unit_test_setup(test_the_engine_takes_the_urls_in_turn_round_and_round,
	                           reset_script),
	    cmocka_unit_test_setup(test_a_refused_login_is_described_and_answered, reset_script),
	    cmocka_unit_test_setup(test_a_login_failing_in_rabbitmq_c_names_its_error,
	                           reset_script),
	    cmocka_unit_test_setup(test_the_login_carries_the_owners_properties, reset_script),
	    cmocka_unit_test_setup(test_a_refused_channel_is_described_as_the_brokers_channel_close,
	                           reset_script),
	    cmocka_unit_test_setup(test_a_close_the_broker_sends_unasked_is_described_and_answered,
	                           reset_script),
	    cmocka_unit_test_setup(test_every_kind_of_failed_reply_reads_as_one_line, reset_script),
	    cmocka_unit_test_setup(test_a_tls_setup_failure_is_a_config_error_before_any_socket,
	                           reset_script),
	    cmocka_unit_test_setup(test_an_unparsable_url_anywhere_is_refused_before_connecting,
	                           reset_script),
	    cmocka_unit_test_setup(test_the_broker_keys_make_the_connect_config, reset_script),
	};

	return cmocka_run_group_tests_name("connect", tests, NULL, NULL);
}
