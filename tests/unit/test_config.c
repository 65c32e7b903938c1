/* test_config.c: the configuration table as a specification: every key's
 * default, each type's syntax and range with its exact message, -o
 * overrides, INI files with their PATH:LINE errors, and canonical text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* Sets key to value, expecting failure with exactly the message want. */
static void assert_set_fails(const char *key, const char *value, const char *want)
{
	warren_config *cfg = warren_config_new();
	char why[300] = "";

	assert_non_null(cfg);
	assert_int_equal(warren_config_set(cfg, key, value, why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_string_equal(why, want);
	warren_config_free(cfg);
}

/* Sets key to value, expecting success and the canonical text want. */
static void assert_set_reads_back(const char *key, const char *value, const char *want)
{
	warren_config *cfg = warren_config_new();
	char why[300] = "";

	assert_non_null(cfg);
	assert_int_equal(warren_config_set(cfg, key, value, why, sizeof(why)), WARREN_OK);
	assert_string_equal(warren_config_get(cfg, key), want);
	warren_config_free(cfg);
}

/* Writes text to a fresh temporary file; its name goes to path. */
static void write_file(char path[static 32], const char *text)
{
	int fd;

	strcpy(path, "/tmp/warren-conf-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* Loads text as a file; returns the result, with the message in why. */
static warren_err load_text(warren_config *cfg, const char *text, char path[static 32], char *why,
                            size_t len)
{
	warren_err err;

	write_file(path, text);
	err = warren_config_load(cfg, path, why, len);
	unlink(path);
	return err;
}

/* ------------------------------------------------------------------ table */

static void test_every_key_has_its_documented_default(void **state)
{
	static const char *const want[][2] = {
	    {"broker.url", "amqp://guest:guest@localhost:5672/"},
	    {"broker.vhost", ""},
	    {"broker.password_file", ""},
	    {"broker.heartbeat", "30000ms"},
	    {"broker.tls_ca", ""},
	    {"broker.tls_cert", ""},
	    {"broker.tls_key", ""},
	    {"broker.tls_verify", "true"},
	    {"broker.connect_timeout", "5000ms"},
	    {"broker.reconnect_min", "500ms"},
	    {"broker.reconnect_max", "1000ms"},
	    {"broker.consumer_timeout", "1800000ms"},
	    {"client.timeout", "30000ms"},
	    {"client.reply_mode", "direct"},
	    {"client.max_in_flight", "100000"},
	    {"client.retry_attempts", "3"},
	    {"client.retry_delay", "100ms"},
	    {"client.blocked_timeout", "0ms"},
	    {"client.metrics_listen", ""},
	    {"client.transient", ""},
	    {"client.batch_replies", "true"},
	    {"client.batch", "*"},
	    {"client.resend", "*"},
	    {"worker.service", ""},
	    {"worker.threads", "4"},
	    {"worker.prefetch", "0"},
	    {"worker.grace", "10000ms"},
	    {"worker.retry_attempts", "5"},
	    {"worker.retry_delay", "250ms"},
	    {"worker.crash_limit", "3"},
	    {"worker.breaker_threshold", "10"},
	    {"worker.breaker_probe", "5000ms"},
	    {"worker.handler_timeout", "300000ms"},
	    {"worker.reply_cache_size", "10000"},
	    {"worker.reply_cache_ttl", "300000ms"},
	    {"worker.reply_cache_bytes", "67108864"},
	    {"message.max_size", "1048576"},
	    {"log.level", "info"},
	    {"security.scheme", "none"},
	    {"security.key_id", ""},
	    {"security.key_file", ""},
	    {"security.keyring", ""},
	    {"security.allow", ""},
	    {"security.window", "300000ms"},
	    {"security.replay_cache", "65536"},
	    {"security.encrypt", ""},
	    {"security.retiring_key_id", ""},
	    {"security.retiring_key_file", ""},
	    {"metrics.listen", ""},
	};
	warren_config *cfg = warren_config_new();

	assert_int_equal(sizeof(want) / sizeof(want[0]), CFG__COUNT);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_string_equal(warren_config_get(cfg, want[i][0]), want[i][1]);
	}
	warren_config_free(cfg);
}

static void test_every_row_sits_at_its_id_and_is_documented(void **state)
{
	for (int i = 0; i < CFG__COUNT; i++) {
		const struct config_def *d = &config_defs[i];

		assert_non_null(d->key);
		assert_int_equal(config_lookup(d->key), i);
		assert_non_null(d->def);
		assert_non_null(d->desc);
		assert_int_equal(d->desc[strlen(d->desc) - 1], '.');
		assert_true(d->min <= d->max);
		assert_true((d->type == CONFIG_ENUM) == (d->enum_values != NULL));
	}
}

static void test_only_the_grace_and_log_level_are_reloadable(void **state)
{
	for (int i = 0; i < CFG__COUNT; i++) {
		assert_int_equal(config_defs[i].reload,
		                 i == CFG_WORKER_GRACE || i == CFG_LOG_LEVEL);
	}
}

static void test_typed_getters_return_ms_bytes_indexes_and_strings(void **state)
{
	warren_config *cfg = warren_config_new();

	assert_int_equal(config_int(cfg, CFG_CLIENT_TIMEOUT), 30000);
	assert_int_equal(config_int(cfg, CFG_BROKER_HEARTBEAT), 30000);
	assert_int_equal(config_int(cfg, CFG_MESSAGE_MAX_SIZE), 1048576);
	assert_int_equal(config_int(cfg, CFG_LOG_LEVEL), 2);
	assert_int_equal(config_int(cfg, CFG_WORKER_THREADS), 4);
	assert_string_equal(config_str(cfg, CFG_BROKER_URL), "amqp://guest:guest@localhost:5672/");
	assert_int_equal(warren_config_set(cfg, "client.reply_mode", "queue", NULL, 0), WARREN_OK);
	assert_int_equal(config_int(cfg, CFG_CLIENT_REPLY_MODE), 1);
	assert_int_equal(warren_config_set(cfg, "broker.vhost", "/prod", NULL, 0), WARREN_OK);
	assert_string_equal(config_str(cfg, CFG_BROKER_VHOST), "/prod");
	warren_config_free(cfg);
}

/* -------------------------------------------------------------- durations */

/* Whether a key was given (a file, -o or warren_config_set), even empty
 * or as its default: a program tells "left out" from "given empty" so
 * (user-service's db.conninfo). A failed set gives nothing. */
static void test_a_key_is_set_once_given_even_empty_and_not_by_its_default(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32], why[300];

	assert_false(warren_config_is_set(cfg, "client.transient"));
	assert_false(warren_config_is_set(cfg, "client.timeout"));
	assert_false(warren_config_is_set(cfg, "client.timout"));
	assert_false(warren_config_is_set(NULL, "client.timeout"));
	assert_int_equal(warren_config_set(cfg, "client.transient", "", NULL, 0), WARREN_OK);
	assert_true(warren_config_is_set(cfg, "client.transient"));
	assert_int_equal(warren_config_set_arg(cfg, "client.timeout=30s", NULL, 0), WARREN_OK);
	assert_true(warren_config_is_set(cfg, "client.timeout"));
	assert_int_equal(warren_config_set(cfg, "client.max_in_flight", "lots", NULL, 0),
	                 WARREN_ERR_CONFIG);
	assert_false(warren_config_is_set(cfg, "client.max_in_flight"));
	assert_int_equal(load_text(cfg, "[log]\nlevel = info\n", path, why, sizeof(why)),
	                 WARREN_OK);
	assert_true(warren_config_is_set(cfg, "log.level"));
	assert_true(warren_config_is_set(cfg, "client.timeout")); /* kept across a load */
	warren_config_free(cfg);
}

static void test_durations_take_ms_s_m_h_or_bare_seconds(void **state)
{
	assert_set_reads_back("client.timeout", "250ms", "250ms");
	assert_set_reads_back("client.timeout", "30s", "30000ms");
	assert_set_reads_back("client.timeout", "2m", "120000ms");
	assert_set_reads_back("client.timeout", "1h", "3600000ms");
	assert_set_reads_back("client.timeout", "24h", "86400000ms");
	assert_set_reads_back("client.timeout", "1.5", "1500ms");
	assert_set_reads_back("client.timeout", "0.5m", "30000ms");
	assert_set_reads_back("client.timeout", "2.0000000000s", "2000ms");
}

static void test_a_word_is_not_a_duration(void **state)
{
	assert_set_fails("client.timeout", "forever",
	                 "client.timeout: \"forever\" is not a duration (e.g. 250ms, 30s, 2m)");
	assert_set_fails("client.timeout", "",
	                 "client.timeout: \"\" is not a duration (e.g. 250ms, 30s, 2m)");
	assert_set_fails("client.timeout", "5 s",
	                 "client.timeout: \"5 s\" is not a duration (e.g. 250ms, 30s, 2m)");
	assert_set_fails("client.timeout", "-1s",
	                 "client.timeout: \"-1s\" is not a duration (e.g. 250ms, 30s, 2m)");
	assert_set_fails("client.timeout", "1.s",
	                 "client.timeout: \"1.s\" is not a duration (e.g. 250ms, 30s, 2m)");
	assert_set_fails("client.timeout", "3d",
	                 "client.timeout: \"3d\" is not a duration (e.g. 250ms, 30s, 2m)");
}

static void test_a_duration_must_come_to_whole_milliseconds(void **state)
{
	assert_set_fails("client.timeout", "1.5ms",
	                 "client.timeout: \"1.5ms\" must be a whole number of milliseconds");
	assert_set_fails("client.timeout", "1.0000000001",
	                 "client.timeout: \"1.0000000001\" must be a whole number of milliseconds");
}

static void test_a_duration_out_of_range_shows_the_limits_in_units(void **state)
{
	assert_set_fails("client.timeout", "0ms",
	                 "client.timeout: \"0ms\" is out of range 1ms..24h");
	assert_set_fails("client.timeout", "24.5h",
	                 "client.timeout: \"24.5h\" is out of range 1ms..24h");
	assert_set_fails("client.timeout", "99999999999999999999h",
	                 "client.timeout: \"99999999999999999999h\" is out of range 1ms..24h");
	assert_set_fails("broker.connect_timeout", "50ms",
	                 "broker.connect_timeout: \"50ms\" is out of range 100ms..10m");
	assert_set_fails("broker.reconnect_min", "2m",
	                 "broker.reconnect_min: \"2m\" is out of range 10ms..1m");
	assert_set_fails("broker.heartbeat", "2h",
	                 "broker.heartbeat: \"2h\" is out of range 0..1h");
}

/* worker.reply_cache_size 0 turns the cache off; a TTL under a second
 * would expire a reply before a caller's resend could use it. */
static void test_the_reply_cache_keys_show_their_limits(void **state)
{
	(void)state;
	assert_set_reads_back("worker.reply_cache_size", "0", "0");
	assert_set_fails("worker.reply_cache_size", "-1",
	                 "worker.reply_cache_size: -1 is out of range 0..1000000");
	assert_set_fails("worker.reply_cache_size", "1000001",
	                 "worker.reply_cache_size: 1000001 is out of range 0..1000000");
	assert_set_reads_back("worker.reply_cache_ttl", "2m", "120000ms");
	assert_set_fails("worker.reply_cache_ttl", "500ms",
	                 "worker.reply_cache_ttl: \"500ms\" is out of range 1s..168h");
	assert_set_reads_back("worker.reply_cache_bytes", "1G", "1073741824");
	assert_set_fails("worker.reply_cache_bytes", "0",
	                 "worker.reply_cache_bytes: \"0\" is out of range 1..64G");
}

static void test_heartbeat_takes_whole_seconds_and_zero_disables_it(void **state)
{
	assert_set_fails("broker.heartbeat", "1500ms",
	                 "broker.heartbeat: \"1500ms\" must be a whole number of seconds");
	assert_set_fails("broker.heartbeat", "1.5",
	                 "broker.heartbeat: \"1.5\" must be a whole number of seconds");
	assert_set_reads_back("broker.heartbeat", "2000ms", "2000ms");
	assert_set_reads_back("broker.heartbeat", "0", "0ms");
	assert_set_reads_back("broker.heartbeat", "1h", "3600000ms");
}

/* ------------------------------------------------------ sizes and integers */

static void test_sizes_take_binary_suffixes(void **state)
{
	assert_set_reads_back("message.max_size", "65536", "65536");
	assert_set_reads_back("message.max_size", "64k", "65536");
	assert_set_reads_back("message.max_size", "64K", "65536");
	assert_set_reads_back("message.max_size", "1M", "1048576");
	assert_set_reads_back("message.max_size", "128M", "134217728");
	assert_set_reads_back("message.max_size", "1", "1");
}

static void test_a_bad_size_is_refused_with_examples_or_limits(void **state)
{
	assert_set_fails("message.max_size", "1T",
	                 "message.max_size: \"1T\" is not a size (e.g. 65536, 64k, 1M)");
	assert_set_fails("message.max_size", "1.5M",
	                 "message.max_size: \"1.5M\" is not a size (e.g. 65536, 64k, 1M)");
	assert_set_fails("message.max_size", "M",
	                 "message.max_size: \"M\" is not a size (e.g. 65536, 64k, 1M)");
	assert_set_fails("message.max_size", "0",
	                 "message.max_size: \"0\" is out of range 1..128M");
	assert_set_fails("message.max_size", "1G",
	                 "message.max_size: \"1G\" is out of range 1..128M");
	assert_set_fails("message.max_size", "134217729",
	                 "message.max_size: \"134217729\" is out of range 1..128M");
	assert_set_fails("message.max_size", "99999999999999999999G",
	                 "message.max_size: \"99999999999999999999G\" is out of range 1..128M");
}

static void test_integers_are_decimal_and_range_checked(void **state)
{
	assert_set_reads_back("worker.threads", "8", "8");
	assert_set_reads_back("worker.threads", "010", "10");
	assert_set_reads_back("worker.prefetch", "0", "0");
	assert_set_reads_back("client.max_in_flight", "10000000", "10000000");
	assert_set_fails("worker.threads", "0", "worker.threads: 0 is out of range 1..1024");
	assert_set_fails("worker.threads", "1025", "worker.threads: 1025 is out of range 1..1024");
	assert_set_fails("worker.threads", "-3", "worker.threads: -3 is out of range 1..1024");
	assert_set_fails("worker.prefetch", "65536",
	                 "worker.prefetch: 65536 is out of range 0..65535");
	assert_set_fails("worker.threads", "99999999999999999999",
	                 "worker.threads: 99999999999999999999 is out of range 1..1024");
	assert_set_fails("worker.threads", "eight", "worker.threads: \"eight\" is not an integer");
	assert_set_fails("worker.threads", "0x10", "worker.threads: \"0x10\" is not an integer");
	assert_set_fails("worker.threads", "", "worker.threads: \"\" is not an integer");
	assert_set_fails("worker.threads", " 4", "worker.threads: \" 4\" is not an integer");
}

/* ------------------------------------------------------- enums and strings */

static void test_enums_take_only_their_names(void **state)
{
	assert_set_reads_back("client.reply_mode", "queue", "queue");
	assert_set_reads_back("log.level", "debug", "debug");
	assert_set_fails("client.reply_mode", "fast",
	                 "client.reply_mode: \"fast\" is not one of direct, queue");
	assert_set_fails("log.level", "INFO",
	                 "log.level: \"INFO\" is not one of error, warn, info, debug");
}

static void test_broker_url_takes_a_list_of_amqp_urls(void **state)
{
	assert_set_reads_back("broker.url", "amqp://a:b@h1:5672/,amqps://h2/",
	                      "amqp://a:b@h1:5672/,amqps://h2/");
	assert_set_fails("broker.url", "http://x",
	                 "broker.url: \"http://x\" is not an amqp:// or amqps:// URL");
	assert_set_fails("broker.url", "amqp://h1/,amqp:/h2",
	                 "broker.url: \"amqp:/h2\" is not an amqp:// or amqps:// URL");
	assert_set_fails("broker.url", "amqp://h1/, amqp://h2/",
	                 "broker.url: \" amqp://h2/\" is not an amqp:// or amqps:// URL");
	assert_set_fails("broker.url", "amqp://h1/,",
	                 "broker.url: \"\" is not an amqp:// or amqps:// URL");
	assert_set_fails("broker.url", "",
	                 "broker.url: needs at least one amqp:// or amqps:// URL");
}

static void test_a_refused_broker_url_does_not_show_its_password(void **state)
{
	assert_set_fails("broker.url", "amqp://h1/,http://warren:pw-warren-cfg@h2/",
	                 "broker.url: \"http://warren:***@h2/\" is not an amqp:// or amqps:// URL");
}

#define SERVICE_RULE "may hold only a-z, 0-9, _ and - (1 to 64 characters)"

static void test_worker_service_is_a_short_lower_case_name(void **state)
{
	char name[66], want[200];

	memset(name, 'a', 64);
	name[64] = '\0';
	assert_set_reads_back("worker.service", "user-svc_2", "user-svc_2");
	assert_set_reads_back("worker.service", name, name);
	assert_set_reads_back("worker.service", "", "");
	assert_set_fails("worker.service", "User", "worker.service: \"User\" " SERVICE_RULE);
	assert_set_fails("worker.service", "a.b", "worker.service: \"a.b\" " SERVICE_RULE);
	strcat(name, "a");
	snprintf(want, sizeof(want), "worker.service: \"%s\" " SERVICE_RULE, name);
	assert_set_fails("worker.service", name, want);
}

static void test_metrics_listen_is_host_and_port(void **state)
{
	assert_set_reads_back("metrics.listen", "", "");
	assert_set_reads_back("metrics.listen", "127.0.0.1:9464", "127.0.0.1:9464");
	assert_set_reads_back("metrics.listen", "[::1]:1", "[::1]:1");
	assert_set_reads_back("metrics.listen", "localhost:65535", "localhost:65535");
	assert_set_fails("metrics.listen", "nohost", "metrics.listen: \"nohost\" is not HOST:PORT");
	assert_set_fails("metrics.listen", ":9464", "metrics.listen: \":9464\" is not HOST:PORT");
	assert_set_fails("metrics.listen", "h:65536",
	                 "metrics.listen: \"h:65536\": the port must be 1 to 65535");
	assert_set_fails("metrics.listen", "h:0", "metrics.listen: \"h:0\": the port must be 1 to 65535");
	assert_set_fails("metrics.listen", "h:", "metrics.listen: \"h:\": the port must be 1 to 65535");
	assert_set_fails("metrics.listen", "h:-1",
	                 "metrics.listen: \"h:-1\": the port must be 1 to 65535");
	assert_set_fails("metrics.listen", "h:80x",
	                 "metrics.listen: \"h:80x\": the port must be 1 to 65535");
}

/* A caller's metrics address is checked as the worker's is, under its own name. */
static void test_client_metrics_listen_is_host_and_port_too(void **state)
{
	assert_set_reads_back("client.metrics_listen", "", "");
	assert_set_reads_back("client.metrics_listen", "127.0.0.1:9465", "127.0.0.1:9465");
	assert_set_reads_back("client.metrics_listen", "[::1]:1", "[::1]:1");
	assert_set_fails("client.metrics_listen", "nohost",
	                 "client.metrics_listen: \"nohost\" is not HOST:PORT");
	assert_set_fails("client.metrics_listen", "h:0",
	                 "client.metrics_listen: \"h:0\": the port must be 1 to 65535");
}

static void test_strings_are_kept_as_given(void **state)
{
	assert_set_reads_back("broker.vhost", "/with spaces and = signs",
	                      "/with spaces and = signs");
	assert_set_reads_back("broker.password_file", "/etc/warren/pw", "/etc/warren/pw");
}

/* ------------------------------------------------------------ set and -o */

static void test_an_unknown_key_is_named_exactly(void **state)
{
	warren_config *cfg = warren_config_new();
	char why[100];

	assert_int_equal(warren_config_set(cfg, "client.timout", "5s", why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(why, "unknown key \"client.timout\"");
	assert_null(warren_config_get(cfg, "client.timout"));
	assert_int_equal(config_lookup("client.timout"), -1);
	assert_int_equal(config_lookup("client"), -1);
	assert_int_equal(config_lookup(NULL), -1);
	warren_config_free(cfg);
}

static void test_a_refused_value_leaves_the_old_one(void **state)
{
	warren_config *cfg = warren_config_new();

	assert_int_equal(warren_config_set(cfg, "client.timeout", "5s", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "client.timeout", "never", NULL, 0),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(warren_config_get(cfg, "client.timeout"), "5000ms");
	assert_int_equal(config_int(cfg, CFG_CLIENT_TIMEOUT), 5000);
	warren_config_free(cfg);
}

static void test_null_arguments_are_refused_not_crashed_on(void **state)
{
	warren_config *cfg = warren_config_new();
	char why[100];

	assert_int_equal(warren_config_set(NULL, "log.level", "info", why, sizeof(why)),
	                 WARREN_ERR_INVALID);
	assert_int_equal(warren_config_set(cfg, NULL, "info", NULL, 0), WARREN_ERR_INVALID);
	assert_int_equal(warren_config_set(cfg, "log.level", NULL, NULL, 0), WARREN_ERR_INVALID);
	assert_int_equal(warren_config_set_arg(cfg, NULL, NULL, 0), WARREN_ERR_INVALID);
	assert_int_equal(warren_config_load(cfg, NULL, NULL, 0), WARREN_ERR_INVALID);
	assert_null(warren_config_get(NULL, "log.level"));
	assert_null(warren_config_get(cfg, NULL));
	warren_config_free(cfg);
	warren_config_free(NULL);
}

static void test_set_arg_splits_at_the_first_equals_sign(void **state)
{
	warren_config *cfg = warren_config_new();

	assert_int_equal(warren_config_set_arg(cfg, "broker.vhost=a=b", NULL, 0), WARREN_OK);
	assert_string_equal(warren_config_get(cfg, "broker.vhost"), "a=b");
	assert_int_equal(warren_config_set_arg(cfg, "broker.vhost=", NULL, 0), WARREN_OK);
	assert_string_equal(warren_config_get(cfg, "broker.vhost"), "");
	warren_config_free(cfg);
}

static void test_set_arg_errors_name_the_argument_or_key(void **state)
{
	warren_config *cfg = warren_config_new();
	char why[200];

	assert_int_equal(warren_config_set_arg(cfg, "foo", why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_string_equal(why, "-o \"foo\": expected key=value");
	assert_int_equal(warren_config_set_arg(cfg, "client.timout=5s", why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(why, "unknown key \"client.timout\"");
	assert_int_equal(warren_config_set_arg(cfg, "client.timeoutx=5s", why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(why, "unknown key \"client.timeoutx\"");
	assert_int_equal(warren_config_set_arg(cfg, "client.timeout=forever", why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(why,
	                    "client.timeout: \"forever\" is not a duration (e.g. 250ms, 30s, 2m)");
	warren_config_free(cfg);
}

static void test_later_overrides_win(void **state)
{
	warren_config *cfg = warren_config_new();

	assert_int_equal(warren_config_set_arg(cfg, "worker.threads=2", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set_arg(cfg, "worker.threads=16", NULL, 0), WARREN_OK);
	assert_string_equal(warren_config_get(cfg, "worker.threads"), "16");
	warren_config_free(cfg);
}

static void test_a_short_errstr_is_truncated_and_terminated(void **state)
{
	warren_config *cfg = warren_config_new();
	char why[8];

	assert_int_equal(warren_config_set(cfg, "client.timout", "5s", why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(why, "unknown");
	warren_config_free(cfg);
}

/* ------------------------------------------------------------------ files */

static void test_a_file_maps_sections_to_keys_and_skips_comments(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32], why[300] = "";

	assert_int_equal(load_text(cfg,
	                           "# warren.conf\n"
	                           "; another comment\n"
	                           "\n"
	                           "[broker]\n"
	                           "url = amqp://u:p@h1:5672/,amqp://u:p@h2:5672/\n"
	                           "  heartbeat = 10s   ; indented, with an inline comment\n"
	                           "\tvhost = \" padded \"\n"
	                           "[client]\r\n"
	                           "timeout=2m\r\n"
	                           "reply_mode: queue\n"
	                           "[log]\n"
	                           "level = debug",
	                           path, why, sizeof(why)),
	                 WARREN_OK);
	assert_string_equal(why, "");
	assert_string_equal(warren_config_get(cfg, "broker.url"),
	                    "amqp://u:p@h1:5672/,amqp://u:p@h2:5672/");
	assert_string_equal(warren_config_get(cfg, "broker.heartbeat"), "10000ms");
	assert_string_equal(warren_config_get(cfg, "broker.vhost"), " padded ");
	assert_string_equal(warren_config_get(cfg, "client.timeout"), "120000ms");
	assert_string_equal(warren_config_get(cfg, "client.reply_mode"), "queue");
	assert_string_equal(warren_config_get(cfg, "log.level"), "debug");
	assert_string_equal(warren_config_get(cfg, "worker.threads"), "4");
	warren_config_free(cfg);
}

static void test_a_later_line_and_then_an_override_win_over_the_file(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32];

	assert_int_equal(load_text(cfg, "[worker]\nthreads = 2\nthreads = 3\n", path, NULL, 0),
	                 WARREN_OK);
	assert_string_equal(warren_config_get(cfg, "worker.threads"), "3");
	assert_int_equal(warren_config_set_arg(cfg, "worker.threads=5", NULL, 0), WARREN_OK);
	assert_string_equal(warren_config_get(cfg, "worker.threads"), "5");
	warren_config_free(cfg);
}

static void test_a_bad_value_names_the_file_and_line(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32], why[300], want[300];

	assert_int_equal(
	    load_text(cfg, "[client]\n# comment\n\ntimeout = forever\n", path, why, sizeof(why)),
	    WARREN_ERR_CONFIG);
	snprintf(want, sizeof(want),
	         "%s:4: client.timeout: \"forever\" is not a duration (e.g. 250ms, 30s, 2m)", path);
	assert_string_equal(why, want);
	warren_config_free(cfg);
}

static void test_a_failed_load_changes_nothing(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32];

	assert_int_equal(
	    load_text(cfg, "[worker]\nthreads = 9\n[log]\nlevel = loud\n", path, NULL, 0),
	    WARREN_ERR_CONFIG);
	assert_string_equal(warren_config_get(cfg, "worker.threads"), "4");
	assert_string_equal(warren_config_get(cfg, "log.level"), "info");
	warren_config_free(cfg);
}

static void test_only_the_first_bad_line_is_reported(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32], why[300], want[300];

	assert_int_equal(
	    load_text(cfg, "[worker]\nthreads = 0\nprefetch = -1\n", path, why, sizeof(why)),
	    WARREN_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s:2: worker.threads: 0 is out of range 1..1024", path);
	assert_string_equal(why, want);
	assert_int_equal(
	    load_text(cfg, "[worker]\nno equals sign\nthreads = 0\n", path, why, sizeof(why)),
	    WARREN_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s:2: expected [section] or key = value", path);
	assert_string_equal(why, want);
	warren_config_free(cfg);
}

static void test_a_key_outside_a_section_is_refused(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32], why[300], want[300];

	assert_int_equal(
	    load_text(cfg, "# top\nurl = amqp://h/\n[broker]\n", path, why, sizeof(why)),
	    WARREN_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s:2: key \"url\" is outside any [section]", path);
	assert_string_equal(why, want);
	warren_config_free(cfg);
}

static void test_an_unknown_key_or_section_in_a_file_is_refused(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32], why[300], want[300];

	assert_int_equal(load_text(cfg, "[broker]\nurll = amqp://h/\n", path, why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s:2: unknown key \"broker.urll\"", path);
	assert_string_equal(why, want);
	assert_int_equal(load_text(cfg, "[brokers]\nurl = amqp://h/\n", path, why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s:2: unknown key \"brokers.url\"", path);
	assert_string_equal(why, want);
	warren_config_free(cfg);
}

static void test_an_unclosed_section_is_a_syntax_error(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32], why[300], want[300];

	assert_int_equal(load_text(cfg, "[broker\nurl = amqp://h/\n", path, why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s:1: expected [section] or key = value", path);
	assert_string_equal(why, want);
	warren_config_free(cfg);
}

/* inih's buffer is INI_MAX_LINE bytes; a longer line must not be cut. */
static void test_an_overlong_line_is_refused_not_cut(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32], why[300], want[300], text[INI_MAX_LINE + 64];

	/* "vhost = " is 8 characters: this line is exactly as long as allowed. */
	snprintf(text, sizeof(text), "[broker]\nvhost = %0*d\n", INI_MAX_LINE - 10, 7);
	assert_int_equal(load_text(cfg, text, path, why, sizeof(why)), WARREN_OK);
	assert_int_equal(strlen(warren_config_get(cfg, "broker.vhost")), INI_MAX_LINE - 10);
	snprintf(text, sizeof(text), "[broker]\nvhost = %0*d\n", INI_MAX_LINE - 9, 8);
	assert_int_equal(load_text(cfg, text, path, why, sizeof(why)), WARREN_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s:2: line is longer than %d characters", path,
	         INI_MAX_LINE - 2);
	assert_string_equal(why, want);
	assert_int_equal(strlen(warren_config_get(cfg, "broker.vhost")), INI_MAX_LINE - 10);
	warren_config_free(cfg);
}

static void test_a_missing_file_says_so(void **state)
{
	warren_config *cfg = warren_config_new();
	char why[300];

	assert_int_equal(warren_config_load(cfg, "/nonexistent/warren.conf", why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(why, "/nonexistent/warren.conf: No such file or directory");
	warren_config_free(cfg);
}

static void test_a_directory_is_not_a_config_file(void **state)
{
	warren_config *cfg = warren_config_new();
	char why[300];

	assert_int_equal(warren_config_load(cfg, "/tmp", why, sizeof(why)), WARREN_ERR_CONFIG);
	assert_string_equal(why, "/tmp: Is a directory");
	warren_config_free(cfg);
}

static void test_an_empty_file_changes_nothing(void **state)
{
	warren_config *cfg = warren_config_new();
	char path[32];

	assert_int_equal(load_text(cfg, "", path, NULL, 0), WARREN_OK);
	assert_string_equal(warren_config_get(cfg, "log.level"), "info");
	warren_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_key_has_its_documented_default),
	    cmocka_unit_test(test_the_reply_cache_keys_show_their_limits),
	    cmocka_unit_test(test_every_row_sits_at_its_id_and_is_documented),
	    cmocka_unit_test(test_only_the_grace_and_log_level_are_reloadable),
	    cmocka_unit_test(test_typed_getters_return_ms_bytes_indexes_and_strings),
	    cmocka_unit_test(test_a_key_is_set_once_given_even_empty_and_not_by_its_default),
	    cmocka_unit_test(test_durations_take_ms_s_m_h_or_bare_seconds),
	    cmocka_unit_test(test_a_word_is_not_a_duration),
	    cmocka_unit_test(test_a_duration_must_come_to_whole_milliseconds),
	    cmocka_unit_test(test_a_duration_out_of_range_shows_the_limits_in_units),
	    cmocka_unit_test(test_heartbeat_takes_whole_seconds_and_zero_disables_it),
	    cmocka_unit_test(test_sizes_take_binary_suffixes),
	    cmocka_unit_test(test_a_bad_size_is_refused_with_examples_or_limits),
	    cmocka_unit_test(test_integers_are_decimal_and_range_checked),
	    cmocka_unit_test(test_enums_take_only_their_names),
	    cmocka_unit_test(test_broker_url_takes_a_list_of_amqp_urls),
	    cmocka_unit_test(test_a_refused_broker_url_does_not_show_its_password),
	    cmocka_unit_test(test_worker_service_is_a_short_lower_case_name),
	    cmocka_unit_test(test_metrics_listen_is_host_and_port),
	    cmocka_unit_test(test_client_metrics_listen_is_host_and_port_too),
	    cmocka_unit_test(test_strings_are_kept_as_given),
	    cmocka_unit_test(test_an_unknown_key_is_named_exactly),
	    cmocka_unit_test(test_a_refused_value_leaves_the_old_one),
	    cmocka_unit_test(test_null_arguments_are_refused_not_crashed_on),
	    cmocka_unit_test(test_set_arg_splits_at_the_first_equals_sign),
	    cmocka_unit_test(test_set_arg_errors_name_the_argument_or_key),
	    cmocka_unit_test(test_later_overrides_win),
	    cmocka_unit_test(test_a_short_errstr_is_truncated_and_terminated),
	    cmocka_unit_test(test_a_file_maps_sections_to_keys_and_skips_comments),
	    cmocka_unit_test(test_a_later_line_and_then_an_override_win_over_the_file),
	    cmocka_unit_test(test_a_bad_value_names_the_file_and_line),
	    cmocka_unit_test(test_a_failed_load_changes_nothing),
	    cmocka_unit_test(test_only_the_first_bad_line_is_reported),
	    cmocka_unit_test(test_a_key_outside_a_section_is_refused),
	    cmocka_unit_test(test_an_unknown_key_or_section_in_a_file_is_refused),
	    cmocka_unit_test(test_an_unclosed_section_is_a_syntax_error),
	    cmocka_unit_test(test_an_overlong_line_is_refused_not_cut),
	    cmocka_unit_test(test_a_missing_file_says_so),
	    cmocka_unit_test(test_a_directory_is_not_a_config_file),
	    cmocka_unit_test(test_an_empty_file_changes_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
