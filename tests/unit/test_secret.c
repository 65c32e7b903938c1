/* test_secret.c: secret files: the first line, found through
 * $CREDENTIALS_DIRECTORY for a relative name, and each failure worded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secret.h"
#include "warren.h"

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test-secret-%ld", (long)getpid());
	return mkdir(dir, 0700);
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void put(const char *name, const char *text)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_the_first_line_without_its_newline(void **state)
{
	char path[128], out[64], why[256] = "";

	put("pw", "s3cret\r\nsecond line\n");
	snprintf(path, sizeof(path), "%s/pw", dir);
	unsetenv("CREDENTIALS_DIRECTORY");
	assert_int_equal(secret_read_line("broker.password_file", path, out, sizeof(out), why,
	                                  sizeof(why)),
	                 0);
	assert_string_equal(out, "s3cret");
}

static void test_a_relative_name_is_a_systemd_credential(void **state)
{
	char out[64], why[256] = "";

	put("db-conninfo", "host=db1 dbname=users");
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	assert_int_equal(secret_read_line("db.conninfo_file", "db-conninfo", out, sizeof(out), why,
	                                  sizeof(why)),
	                 0);
	assert_string_equal(out, "host=db1 dbname=users");
	unsetenv("CREDENTIALS_DIRECTORY");
}

static void test_failures_name_the_key_and_the_file(void **state)
{
	char path[128], out[8], why[256], want[300];

	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	assert_int_equal(secret_read_line("db.conninfo_file", "absent", out, sizeof(out), why,
	                                  sizeof(why)),
	                 -1);
	snprintf(want, sizeof(want), "db.conninfo_file: %s/absent: No such file or directory", dir);
	assert_string_equal(why, want);
	unsetenv("CREDENTIALS_DIRECTORY");

	put("empty", "\n");
	snprintf(path, sizeof(path), "%s/empty", dir);
	assert_int_equal(secret_read_line("k", path, out, sizeof(out), why, sizeof(why)), -1);
	snprintf(want, sizeof(want), "k: %s: the first line is empty", path);
	assert_string_equal(why, want);

	put("long", "0123456789\n");
	snprintf(path, sizeof(path), "%s/long", dir);
	assert_int_equal(secret_read_line("k", path, out, sizeof(out), why, sizeof(why)), -1);
	snprintf(want, sizeof(want), "k: %s: the first line is longer than 6 bytes", path);
	assert_string_equal(why, want);
}

static void expect_mask(const char *url, size_t n, const char *want)
{
	char out[128];

	assert_string_equal(secret_mask_url(url, n, out, sizeof(out)), want);
}

/* Every message that shows a broker URL shows it through secret_mask_url. */
static void test_url_passwords_are_masked_for_messages(void **state)
{
	expect_mask("amqp://warren:pw-warren-1@localhost:5672/", SIZE_MAX,
	            "amqp://warren:***@localhost:5672/");
	expect_mask("amqp://guest:guest@h/", SIZE_MAX, "amqp://guest:***@h/");
	expect_mask("amqp://localhost/", SIZE_MAX, "amqp://localhost/");
	expect_mask("amqp://warren@localhost/", SIZE_MAX, "amqp://warren@localhost/");
	expect_mask("amqp://u:@h/", SIZE_MAX, "amqp://u:***@h/");
	/* An unescaped '@' or '/' in a malformed password: up to the last '@'. */
	expect_mask("amqps://u:p@s/s@host/vh", SIZE_MAX, "amqps://u:***@host/vh");
	expect_mask("u:pw-warren-2@host", SIZE_MAX, "u:***@host");
	/* One element of a list, given by its length. */
	expect_mask("amqp://a:b@h,amqp://c:d@i", 12, "amqp://a:***@h");
	expect_mask("", SIZE_MAX, "");
}

static void test_a_masked_url_is_cut_to_the_buffer(void **state)
{
	char out[16];

	assert_string_equal(secret_mask_url("amqp://user:pw@a-long-host-name/", SIZE_MAX, out,
	                                    sizeof(out)),
	                    "amqp://user:***");
}

/* warren_config_read_secret: the file a string key names, through the
 * credentials directory; an empty key is no secret; a key that names no
 * file (unknown, or not a string) is the caller's mistake. */
static void test_a_secret_is_read_from_the_file_a_key_names(void **state)
{
	warren_config *cfg = warren_config_new();
	char out[64] = "x", why[256] = "";

	assert_non_null(cfg);
	put("broker-pw", "from-credentials\n");
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	assert_int_equal(warren_config_read_secret(cfg, "broker.password_file", out, sizeof(out),
	                                           why, sizeof(why)),
	                 WARREN_OK);
	assert_string_equal(out, "");
	assert_int_equal(warren_config_set(cfg, "broker.password_file", "broker-pw", NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_read_secret(cfg, "broker.password_file", out, sizeof(out),
	                                           why, sizeof(why)),
	                 WARREN_OK);
	assert_string_equal(out, "from-credentials");
	assert_int_equal(warren_config_set(cfg, "broker.password_file", "absent", NULL, 0),
	                 WARREN_OK);
	assert_int_equal(warren_config_read_secret(cfg, "broker.password_file", out, sizeof(out),
	                                           why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(out, "");
	assert_non_null(strstr(why, "broker.password_file: "));
	assert_non_null(strstr(why, "/absent: No such file or directory"));
	assert_int_equal(warren_config_read_secret(cfg, "worker.threads", out, sizeof(out), why,
	                                           sizeof(why)),
	                 WARREN_ERR_INVALID);
	assert_string_equal(why, "warren_config_read_secret: \"worker.threads\" is not a string key");
	assert_int_equal(warren_config_read_secret(cfg, "no.such", out, sizeof(out), why,
	                                           sizeof(why)),
	                 WARREN_ERR_INVALID);
	assert_string_equal(why, "warren_config_read_secret: \"no.such\" is not a string key");
	assert_string_equal(out, "");
	unsetenv("CREDENTIALS_DIRECTORY");
	warren_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_the_first_line_without_its_newline),
		cmocka_unit_test(test_a_relative_name_is_a_systemd_credential),
		cmocka_unit_test(test_failures_name_the_key_and_the_file),
		cmocka_unit_test(test_url_passwords_are_masked_for_messages),
		cmocka_unit_test(test_a_masked_url_is_cut_to_the_buffer),
		cmocka_unit_test(test_a_secret_is_read_from_the_file_a_key_names),
	};

	return cmocka_run_group_tests_name("secret", tests, setup, teardown);
}
