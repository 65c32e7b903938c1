/* test_cli.c: what every program does with its command line (cli.h): the
 * order defaults, file, environment, -o; passwords refused on the command
 * line, where every user can read them, in the library's broker.url and in
 * a program's own key that names its password file; a daemon's standard
 * options, and each error worded as the user sees it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "exitcodes.h"

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test-cli-%ld", (long)getpid());
	return mkdir(dir, 0700) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static int unset_env(void **state)
{
	unsetenv("TEST_CLI_URL");
	return 0;
}

/* ---------------------------------------------------------------- stderr */

static int saved_stderr = -1;
static FILE *captured;
static char err_text[4096];

static void capture_stderr(void)
{
	fflush(stderr);
	captured = tmpfile();
	assert_non_null(captured);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(dup2(fileno(captured), STDERR_FILENO) >= 0);
}

/* What was written to stderr since capture_stderr. */
static const char *stderr_text(void)
{
	size_t n;

	fflush(stderr);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	rewind(captured);
	n = fread(err_text, 1, sizeof(err_text) - 1, captured);
	err_text[n] = '\0';
	fclose(captured);
	return err_text;
}

/* cli_parse_daemon_args over a NULL-terminated argument list, getopt
 * reset; stderr in err_text. */
static int parse(struct cli_config *cc, const char *const *args)
{
	char *argv[160] = {(char *)"svc"};
	int argc = 1, rc;

	for (; args[argc - 1] != NULL; argc++) {
		argv[argc] = (char *)args[argc - 1];
	}
	optind = 0;
	capture_stderr();
	rc = cli_parse_daemon_args(argc, argv, "svc", cc);
	stderr_text();
	return rc;
}

/* ----------------------------------------------------------- daemon args */

static void test_a_daemon_takes_c_and_o_short_and_long(void **state)
{
	struct cli_config cc = {0};

	assert_int_equal(parse(&cc, (const char *const[]){"-c", "a.conf", "-o", "log.level=debug",
	                                                  "--option=worker.threads=2", "--option",
	                                                  "worker.prefetch=3", NULL}),
	                 EXITCODE_OK);
	assert_string_equal(cc.file, "a.conf");
	assert_int_equal(cc.noverrides, 3);
	assert_string_equal(cc.overrides[0], "log.level=debug");
	assert_string_equal(cc.overrides[1], "worker.threads=2");
	assert_string_equal(cc.overrides[2], "worker.prefetch=3");
	assert_string_equal(err_text, "");

	memset(&cc, 0, sizeof(cc));
	assert_int_equal(parse(&cc, (const char *const[]){"--config=b.conf", NULL}), EXITCODE_OK);
	assert_string_equal(cc.file, "b.conf");
}

static void test_a_daemon_words_each_usage_error(void **state)
{
	struct cli_config cc = {0};

	assert_int_equal(parse(&cc, (const char *const[]){"-x", NULL}), EXITCODE_USAGE);
	assert_string_equal(err_text, "svc: unknown option -x\n"
	                              "usage: svc [-c FILE] [-o key=value]... [-h] [-V]\n");
	assert_int_equal(parse(&cc, (const char *const[]){"--nope=1", NULL}), EXITCODE_USAGE);
	assert_string_equal(err_text, "svc: unknown option --nope\n"
	                              "usage: svc [-c FILE] [-o key=value]... [-h] [-V]\n");
	assert_int_equal(parse(&cc, (const char *const[]){"-o", NULL}), EXITCODE_USAGE);
	assert_string_equal(err_text, "svc: option -o needs a value\n"
	                              "usage: svc [-c FILE] [-o key=value]... [-h] [-V]\n");
	assert_int_equal(parse(&cc, (const char *const[]){"--config", NULL}), EXITCODE_USAGE);
	assert_string_equal(err_text, "svc: option --config needs a value\n"
	                              "usage: svc [-c FILE] [-o key=value]... [-h] [-V]\n");
	assert_int_equal(parse(&cc, (const char *const[]){"extra", NULL}), EXITCODE_USAGE);
	assert_string_equal(err_text, "svc: unexpected argument \"extra\"\n");
	/* --help takes no value. */
	assert_int_equal(parse(&cc, (const char *const[]){"--help=1", NULL}), EXITCODE_USAGE);
	assert_string_equal(err_text, "svc: unknown option --help\n"
	                              "usage: svc [-c FILE] [-o key=value]... [-h] [-V]\n");
}

/* -h and -V answer on stdout and leave the exit to the caller: a library
 * (warren_daemon) must not exit under its program. */
static void test_help_and_version_are_answered_without_exiting(void **state)
{
	struct cli_config cc = {0};

	assert_int_equal(parse(&cc, (const char *const[]){"--help", NULL}), EXITCODE_OK);
	assert_true(cc.done);
	memset(&cc, 0, sizeof(cc));
	assert_int_equal(parse(&cc, (const char *const[]){"-V", NULL}), EXITCODE_OK);
	assert_true(cc.done);
	memset(&cc, 0, sizeof(cc));
	assert_int_equal(parse(&cc, (const char *const[]){"-c", "x.conf", NULL}), EXITCODE_OK);
	assert_false(cc.done);
}

static void test_at_most_64_overrides(void **state)
{
	const char *args[2 * CLI_MAX_OVERRIDES + 3];
	struct cli_config cc = {0};
	int n = 0;

	for (int i = 0; i < CLI_MAX_OVERRIDES; i++) {
		args[n++] = "-o";
		args[n++] = "log.level=info";
	}
	args[n] = NULL;
	assert_int_equal(parse(&cc, args), EXITCODE_OK);
	assert_int_equal(cc.noverrides, CLI_MAX_OVERRIDES);

	memset(&cc, 0, sizeof(cc));
	args[n++] = "-o";
	args[n++] = "log.level=warn";
	args[n] = NULL;
	assert_int_equal(parse(&cc, args), EXITCODE_USAGE);
	assert_string_equal(err_text, "svc: too many -o options\n");
	assert_false(cli_add_override(&cc, "log.level=error"));
}

/* What rpc-call and rpc-dlq do with their own option tables: -c and -o
 * through one function, the 65th -o refused in the program's name. */
static void test_a_program_takes_c_and_o_through_one_function(void **state)
{
	struct cli_config cc = {0};
	int rc = EXITCODE_OK;

	assert_int_equal(cli_take_config_option(&cc, "prog", 'c', "a.conf"), EXITCODE_OK);
	assert_string_equal(cc.file, "a.conf");
	for (int i = 0; i < CLI_MAX_OVERRIDES; i++) {
		assert_int_equal(cli_take_config_option(&cc, "prog", 'o', "log.level=warn"),
		                 EXITCODE_OK);
	}
	capture_stderr();
	rc = cli_take_config_option(&cc, "prog", 'o', "log.level=error");
	stderr_text();
	assert_int_equal(rc, EXITCODE_USAGE);
	assert_string_equal(err_text, "prog: too many -o options\n");
	assert_int_equal(cc.noverrides, CLI_MAX_OVERRIDES);
}

/* ---------------------------------------------------------- build_config */

static warren_config *build(const struct cli_config *cc, const char *env, char *why)
{
	return cli_build_config(cc, env, why, 512);
}

static void test_the_order_is_defaults_file_environment_overrides(void **state)
{
	char path[128], why[512] = "";
	struct cli_config cc = {.file = path};
	warren_config *cfg;
	FILE *f;

	snprintf(path, sizeof(path), "%s/order.conf", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[broker]\nurl = amqp://file/\nvhost = fromfile\n[log]\nlevel = debug\n", f);
	fclose(f);
	setenv("TEST_CLI_URL", "amqp://env/", 1);
	cli_add_override(&cc, "log.level=warn");
	cli_add_override(&cc, "log.level=error");

	cfg = build(&cc, "TEST_CLI_URL", why);
	assert_string_equal(why, "");
	assert_non_null(cfg);
	assert_string_equal(warren_config_get(cfg, "broker.url"), "amqp://env/");
	assert_string_equal(warren_config_get(cfg, "broker.vhost"), "fromfile");
	assert_string_equal(warren_config_get(cfg, "log.level"), "error");
	warren_config_free(cfg);

	/* An empty variable is as good as none: the file's URL stands. */
	setenv("TEST_CLI_URL", "", 1);
	cfg = build(&cc, "TEST_CLI_URL", why);
	assert_string_equal(warren_config_get(cfg, "broker.url"), "amqp://file/");
	warren_config_free(cfg);
	/* And an -o after the environment wins over it. */
	setenv("TEST_CLI_URL", "amqp://env/", 1);
	cli_add_override(&cc, "broker.url=amqp://arg/");
	cfg = build(&cc, "TEST_CLI_URL", why);
	assert_string_equal(warren_config_get(cfg, "broker.url"), "amqp://arg/");
	warren_config_free(cfg);
}

static void test_bad_input_is_worded(void **state)
{
	char why[512] = "", path[128];
	struct cli_config cc = {0};

	setenv("TEST_CLI_URL", "http://x", 1);
	assert_null(build(&cc, "TEST_CLI_URL", why));
	assert_string_equal(why, "TEST_CLI_URL: broker.url: \"http://x\" is not an amqp:// or "
	                         "amqps:// URL");
	unsetenv("TEST_CLI_URL");

	cli_add_override(&cc, "nokey");
	assert_null(build(&cc, NULL, why));
	assert_string_equal(why, "-o \"nokey\": expected key=value");

	memset(&cc, 0, sizeof(cc));
	cli_add_override(&cc, "broker.uri=amqp://x/");
	assert_null(build(&cc, NULL, why));
	assert_string_equal(why, "unknown key \"broker.uri\"");

	memset(&cc, 0, sizeof(cc));
	snprintf(path, sizeof(path), "%s/none.conf", dir);
	cc.file = path;
	assert_null(build(&cc, NULL, why));
	assert_non_null(strstr(why, "none.conf"));
	assert_non_null(strstr(why, "No such file or directory"));
}

/* ------------------------------------------------------------- passwords */

static const char broker_refusal[] =
    "-o broker.url: a password on the command line can be read by every user of this machine; "
    "put it in broker.password_file or the configuration file";
static const char db_refusal[] =
    "-o db.conninfo: a password on the command line can be read by every user of this machine; "
    "put it in db.conninfo_file or the configuration file";

/* The error of building with one -o, "" when it is taken: a config of
 * the library's keys and a program's two [db] keys, db.conninfo carrying a
 * password that belongs in db.conninfo_file (as user-service has them). */
static const char *one_override(const char *arg)
{
	static char why[512];
	struct cli_config cc = {0};
	warren_config *cfg = warren_config_new();
	const warren_key conninfo = {.name = "db.conninfo",
	                             .description = "Where the database is.",
	                             .password_file = "db.conninfo_file"};
	const warren_key file = {.name = "db.conninfo_file", .description = "Its file."};
	int rc;

	why[0] = '\0';
	assert_int_equal(warren_config_add_key(cfg, &conninfo, why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_config_add_key(cfg, &file, why, sizeof(why)), WARREN_OK);
	cli_add_override(&cc, arg);
	rc = cli_fill_config(cfg, &cc, NULL, why, sizeof(why));
	warren_config_free(cfg);
	return rc == 0 ? "" : why;
}

/* Without the program's key, -o db.conninfo is just an unknown key. */
static void test_a_key_the_program_did_not_add_is_unknown(void **state)
{
	char why[512] = "";
	struct cli_config cc = {0};

	cli_add_override(&cc, "db.conninfo=host=db password=s3cret");
	assert_null(build(&cc, NULL, why));
	assert_string_equal(why, "unknown key \"db.conninfo\"");
}

/* The program's key that names no password file takes any value. */
static void test_a_key_without_a_password_file_takes_a_password(void **state)
{
	assert_string_equal(one_override("db.conninfo_file=password=x"), "");
}

static void test_a_broker_password_on_the_command_line_is_refused(void **state)
{
	assert_string_equal(one_override("broker.url=amqp://app:s3cret@h/"), broker_refusal);
	assert_string_equal(one_override("broker.url = amqps://app:s3cret@h:5671/v"),
	                    broker_refusal);
	/* Anywhere in the list. */
	assert_string_equal(one_override("broker.url=amqp://guest:guest@a/,amqp://app:pw@b/"),
	                    broker_refusal);
	/* A password with an '@' in it. */
	assert_string_equal(one_override("broker.url=amqp://app:p@ss@h/"), broker_refusal);
}

static void test_urls_without_a_secret_are_taken(void **state)
{
	assert_string_equal(one_override("broker.url=amqp://h/"), "");
	assert_string_equal(one_override("broker.url=amqp://app@h/"), "");
	/* RabbitMQ's well-known guest password is no secret. */
	assert_string_equal(one_override("broker.url=amqp://guest:guest@localhost/"), "");
	assert_string_equal(one_override("broker.url=amqp://a/,amqp://guest:guest@b/"), "");
	/* A ':' after the host is a port, not a password. */
	assert_string_equal(one_override("broker.url=amqp://h:5672/"), "");
}

static void test_a_database_password_on_the_command_line_is_refused(void **state)
{
	assert_string_equal(one_override("db.conninfo=host=db password=s3cret"), db_refusal);
	assert_string_equal(one_override("db.conninfo=host=db password = s3cret"), db_refusal);
	assert_string_equal(one_override("db.conninfo=password=s3cret host=db"), db_refusal);
	assert_string_equal(one_override("db.conninfo=host=db\tpassword=s3cret"), db_refusal);
	assert_string_equal(one_override("db.conninfo=postgresql://app:s3cret@db/app"), db_refusal);
	/* libpq takes a password as a URI query parameter too. */
	assert_string_equal(one_override("db.conninfo=postgresql://db/app?password=s3cret"),
	                    db_refusal);
	assert_string_equal(
	    one_override("db.conninfo=postgres://app@db/app?sslmode=require&password=s3cret"),
	    db_refusal);
	/* Without one: taken. */
	assert_string_equal(one_override("db.conninfo=host=db user=app"), "");
	assert_string_equal(one_override("db.conninfo=postgresql://db/app?passfile=/etc/pgpass"),
	                    "");
	assert_string_equal(one_override("db.conninfo=host=db passwordless=1"), "");
	assert_string_equal(one_override("db.conninfo=postgresql://app@db/app"), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_daemon_takes_c_and_o_short_and_long),
	    cmocka_unit_test(test_a_daemon_words_each_usage_error),
	    cmocka_unit_test(test_help_and_version_are_answered_without_exiting),
	    cmocka_unit_test(test_at_most_64_overrides),
	    cmocka_unit_test(test_a_program_takes_c_and_o_through_one_function),
	    cmocka_unit_test_teardown(test_the_order_is_defaults_file_environment_overrides,
	                              unset_env),
	    cmocka_unit_test_teardown(test_bad_input_is_worded, unset_env),
	    cmocka_unit_test(test_a_broker_password_on_the_command_line_is_refused),
	    cmocka_unit_test(test_urls_without_a_secret_are_taken),
	    cmocka_unit_test(test_a_database_password_on_the_command_line_is_refused),
	    cmocka_unit_test(test_a_key_the_program_did_not_add_is_unknown),
	    cmocka_unit_test(test_a_key_without_a_password_file_takes_a_password),
	};

	return cmocka_run_group_tests_name("cli", tests, setup, teardown);
}
