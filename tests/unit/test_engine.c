/* test_engine.c: connection failures a live broker will not show on demand,
 * reached by mocking rabbitmq-c with -Wl,--wrap (see WRAP_test_engine in the
 * Makefile): each must end warren_client_new with a clear TRANSPORT error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include "syncconn.h"
#include "warren.h"

int __wrap_amqp_socket_open_noblock(amqp_socket_t *s, const char *host, int port,
                                    const struct timeval *tv);
amqp_rpc_reply_t __wrap_amqp_login_with_properties(amqp_connection_state_t c, const char *vhost,
                                                   int channel_max, int frame_max, int heartbeat,
                                                   const amqp_table_t *props,
                                                   amqp_sasl_method_enum method, ...);

/* The wrappers run on the engine's I/O thread, where cmocka's mock queues
 * must not be touched (they are not thread-safe): they follow a script set
 * by the test and record what they saw; the test asserts afterwards. */
static struct {
	int open_results[4];
	int open_ports[4];
	int opens;
	int login_heartbeat;
	int logins;
} script;

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

static amqp_connection_close_t refusal = {
	.reply_code = 403,
	.reply_text = {.len = 14, .bytes = (void *)"ACCESS_REFUSED"},
};

amqp_rpc_reply_t __wrap_amqp_login_with_properties(amqp_connection_state_t c, const char *vhost,
                                                   int channel_max, int frame_max, int heartbeat,
                                                   const amqp_table_t *props,
                                                   amqp_sasl_method_enum method, ...)
{
	amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION};

	script.logins++;
	script.login_heartbeat = heartbeat;
	r.reply.id = AMQP_CONNECTION_CLOSE_METHOD;
	r.reply.decoded = &refusal;
	return r;
}

static int reset_script(void **state)
{
	memset(&script, 0, sizeof(script));
	return 0;
}

static warren_config *config(const char *urls)
{
	warren_config *cfg = warren_config_new();

	assert_int_equal(warren_config_set(cfg, "broker.url", urls, NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "broker.connect_timeout", "200ms", NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "broker.heartbeat", "7s", NULL, 0), WARREN_OK);
	return cfg;
}

static void test_unreachable_broker_fails_client_new_with_the_socket_error(void **state)
{
	warren_config *cfg = config("amqp://guest:guest@127.0.0.1:5999/");
	warren_client *c = (warren_client *)1;
	char why[300];

	script.open_results[0] = AMQP_STATUS_SOCKET_ERROR;
	assert_int_equal(warren_client_new(cfg, "t", &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_null(c);
	assert_int_equal(script.opens, 1);
	assert_int_equal(script.open_ports[0], 5999);
	assert_string_equal(why, "cannot connect to 127.0.0.1:5999: a socket error occurred");
	warren_config_free(cfg);
}

static void test_every_url_of_the_list_is_tried_before_giving_up(void **state)
{
	warren_config *cfg = config("amqp://a:b@127.0.0.1:5998/,amqp://a:b@127.0.0.1:5997/");
	warren_client *c = NULL;
	char why[300];

	script.open_results[0] = AMQP_STATUS_SOCKET_ERROR;
	script.open_results[1] = AMQP_STATUS_TCP_ERROR;
	assert_int_equal(warren_client_new(cfg, "t", &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_int_equal(script.opens, 2);
	assert_int_equal(script.open_ports[0], 5998);
	assert_int_equal(script.open_ports[1], 5997);
	assert_string_equal(why, "cannot connect to 127.0.0.1:5997: a socket error occurred");
	warren_config_free(cfg);
}

static void test_refused_login_names_the_broker_reply(void **state)
{
	warren_config *cfg = config("amqp://guest:wrong@127.0.0.1:5996/");
	warren_client *c = NULL;
	char why[300];

	script.open_results[0] = AMQP_STATUS_OK;
	assert_int_equal(warren_client_new(cfg, "t", &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_int_equal(script.open_ports[0], 5996);
	assert_int_equal(script.logins, 1);
	assert_int_equal(script.login_heartbeat, 7);
	assert_string_equal(why, "login to 127.0.0.1:5996: 403 ACCESS_REFUSED");
	warren_config_free(cfg);
}

static void test_an_unreadable_tls_ca_file_is_a_clear_error(void **state)
{
	warren_config *cfg = config("amqps://guest:guest@broker.example:5671/");
	warren_client *c = NULL;
	char why[300];

	assert_int_equal(warren_config_set(cfg, "broker.tls_ca", "/nonexistent/ca.pem", NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_client_new(cfg, "t", &c, why, sizeof(why)), WARREN_ERR_TRANSPORT);
	assert_string_equal(why,
	                    "broker.tls_ca: /nonexistent/ca.pem: not a readable PEM file of certificates");
	/* Refused before any connection was tried. */
	assert_int_equal(script.opens, 0);
	warren_config_free(cfg);
}

static void test_unreadable_password_file_is_a_config_error(void **state)
{
	warren_config *cfg = config("amqp://guest@127.0.0.1:5995/");
	warren_client *c = NULL;
	char why[300];

	assert_int_equal(warren_config_set(cfg, "broker.password_file", "/nonexistent/pw", NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_client_new(cfg, "t", &c, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_string_equal(why,
	                    "broker.password_file: /nonexistent/pw: No such file or directory");
	warren_config_free(cfg);
}

/* The port is not a number: amqp_parse_url refuses the URL, and the message
 * shows it without its password, for the engine and for the tools'
 * one-shot connection alike. */
#define BAD_URL "amqp://h1/,amqp://warren:pw-warren-unit@localhost:56x72/"
#define BAD_URL_MSG "broker.url: cannot parse \"amqp://warren:***@localhost:56x72/\""

static void test_an_unparsable_url_is_shown_without_its_password(void **state)
{
	warren_config *cfg = config(BAD_URL);
	warren_client *c = NULL;
	char why[300];

	assert_int_equal(warren_client_new(cfg, "t", &c, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_string_equal(why, BAD_URL_MSG);
	assert_int_equal(script.opens, 0);
	warren_config_free(cfg);
}

static void test_a_tool_shows_an_unparsable_url_without_its_password(void **state)
{
	warren_config *cfg = config("amqp://warren:pw-warren-unit@localhost:56x72/");
	struct syncconn *sc = NULL;
	char why[300];

	assert_int_equal(syncconn_open(cfg, "t", &sc, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_null(sc);
	assert_string_equal(why, BAD_URL_MSG);
	warren_config_free(cfg);
}

/* The tools parse the whole list first, as the engine does: a bad URL
 * behind a good one is refused at once, not when the failover reaches it. */
static void test_a_tool_refuses_an_unparsable_url_before_trying_any(void **state)
{
	warren_config *cfg = config(BAD_URL);
	struct syncconn *sc = NULL;
	char why[300];

	script.open_results[0] = AMQP_STATUS_SOCKET_ERROR;
	assert_int_equal(syncconn_open(cfg, "t", &sc, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_null(sc);
	assert_string_equal(why, BAD_URL_MSG);
	assert_int_equal(script.opens, 0);
	warren_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_unreachable_broker_fails_client_new_with_the_socket_error, reset_script),
		cmocka_unit_test_setup(test_every_url_of_the_list_is_tried_before_giving_up, reset_script),
		cmocka_unit_test_setup(test_refused_login_names_the_broker_reply, reset_script),
		cmocka_unit_test_setup(test_an_unreadable_tls_ca_file_is_a_clear_error, reset_script),
		cmocka_unit_test_setup(test_unreadable_password_file_is_a_config_error, reset_script),
		cmocka_unit_test_setup(test_an_unparsable_url_is_shown_without_its_password, reset_script),
		cmocka_unit_test_setup(test_a_tool_shows_an_unparsable_url_without_its_password, reset_script),
		cmocka_unit_test_setup(test_a_tool_refuses_an_unparsable_url_before_trying_any, reset_script),
	};

	return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
