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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_the_first_line_without_its_newline),
		cmocka_unit_test(test_a_relative_name_is_a_systemd_credential),
		cmocka_unit_test(test_failures_name_the_key_and_the_file),
	};

	return cmocka_run_group_tests_name("secret", tests, setup, teardown);
}
