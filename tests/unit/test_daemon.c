/* test_daemon.c: warren_daemon without a broker: the standard options and
 * each command-line error as the user sees it, the exit status of each
 * outcome before serving, a program's own keys (and each mistake in one),
 * and SIGHUP reloading exactly the keys the table marks reloadable, the
 * program's included, while a bad file keeps the running configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "warren.h"

#define USAGE "usage: svc [-c FILE] [-o key=value]... [-h] [-V]\n"

static char dir[64], conf[128];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test-daemon-%ld", (long)getpid());
	snprintf(conf, sizeof(conf), "%s/svc.conf", dir);
	return mkdir(dir, 0700) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void write_conf(const char *text)
{
	FILE *f = fopen(conf, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* ---------------------------------------------------- stdout and stderr */

struct capture {
	int fd, saved;
	FILE *f;
	char text[8192];
};

static struct capture out_cap = {.fd = STDOUT_FILENO}, err_cap = {.fd = STDERR_FILENO};

static void capture(struct capture *c)
{
	fflush(c->fd == STDOUT_FILENO ? stdout : stderr);
	c->f = tmpfile();
	assert_non_null(c->f);
	c->saved = dup(c->fd);
	assert_true(dup2(fileno(c->f), c->fd) >= 0);
}

/* What was written since capture. */
static const char *release(struct capture *c)
{
	size_t n;

	fflush(c->fd == STDOUT_FILENO ? stdout : stderr);
	dup2(c->saved, c->fd);
	close(c->saved);
	rewind(c->f);
	n = fread(c->text, 1, sizeof(c->text) - 1, c->f);
	c->text[n] = '\0';
	fclose(c->f);
	return c->text;
}

/* warren_daemon_new over a NULL-terminated argument list; its stdout and
 * stderr in out_cap.text and err_cap.text. */
static int new_daemon(warren_daemon **d, const char *const *args)
{
	char *argv[64] = {(char *)"svc"};
	int argc = 1, status;

	for (; args[argc - 1] != NULL; argc++) {
		argv[argc] = (char *)args[argc - 1];
	}
	capture(&out_cap);
	capture(&err_cap);
	status = warren_daemon_new(argc, argv, "svc", "svc", d);
	release(&err_cap);
	release(&out_cap);
	return status;
}

/* ------------------------------------------------------------- options */

static void test_help_and_version_answer_on_stdout_with_no_daemon(void **state)
{
	warren_daemon *d = (warren_daemon *)1;

	assert_int_equal(new_daemon(&d, (const char *const[]){"--help", NULL}), WARREN_EXIT_OK);
	assert_null(d);
	assert_string_equal(out_cap.text, USAGE);
	assert_string_equal(err_cap.text, "");
	assert_int_equal(new_daemon(&d, (const char *const[]){"-V", NULL}), WARREN_EXIT_OK);
	assert_null(d);
	assert_string_equal(out_cap.text, "svc " WARREN_VERSION "\n");
	assert_string_equal(err_cap.text, "");
}

static void test_a_daemon_without_a_program_name_is_refused(void **state)
{
	char *argv[] = {(char *)"svc", NULL};
	warren_daemon *d = (warren_daemon *)1;

	capture(&err_cap);
	assert_int_equal(warren_daemon_new(1, argv, NULL, "svc", &d), WARREN_EXIT_INTERNAL);
	release(&err_cap);
	assert_string_equal(err_cap.text, "warren_daemon_new: program and out must not be NULL\n");
	/* What a main that skipped its check hands on. */
	assert_int_equal(warren_daemon_load(NULL), WARREN_EXIT_INTERNAL);
	assert_int_equal(warren_daemon_run(NULL), WARREN_EXIT_INTERNAL);
}

static void test_each_usage_error_is_worded_and_exits_2(void **state)
{
	static const struct {
		const char *args[4];
		const char *err;
	} cases[] = {
	    {{"-x"}, "svc: unknown option -x\n" USAGE},
	    {{"--frobnicate=1"}, "svc: unknown option --frobnicate\n" USAGE},
	    {{"-c"}, "svc: option -c needs a value\n" USAGE},
	    {{"--option"}, "svc: option --option needs a value\n" USAGE},
	    {{"-o", "log.level=warn", "extra"}, "svc: unexpected argument \"extra\"\n"},
	};
	warren_daemon *d;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		d = (warren_daemon *)1;
		assert_int_equal(new_daemon(&d, cases[i].args), WARREN_EXIT_USAGE);
		assert_null(d);
		assert_string_equal(err_cap.text, cases[i].err);
		assert_string_equal(out_cap.text, "");
	}
}

/* ------------------------------------------------------ loading, status */

/* A daemon with args, loaded: the load's status, stderr in err_cap.text. */
static int load(warren_daemon **d, const char *const *args)
{
	int status;

	assert_int_equal(new_daemon(d, args), WARREN_EXIT_OK);
	assert_non_null(*d);
	capture(&err_cap);
	status = warren_daemon_load(*d);
	release(&err_cap);
	return status;
}

static void test_a_bad_configuration_exits_3_with_its_reason(void **state)
{
	warren_daemon *d;

	assert_int_equal(load(&d, (const char *const[]){"-o", "worker.threads=0", NULL}),
	                 WARREN_EXIT_CONFIG);
	assert_string_equal(err_cap.text, "svc: worker.threads: 0 is out of range 1..1024\n");
	/* The failed load is kept: run returns its status without starting. */
	assert_int_equal(warren_daemon_run(d), WARREN_EXIT_CONFIG);

	assert_int_equal(load(&d, (const char *const[]){"-o", "nokey", NULL}), WARREN_EXIT_CONFIG);
	assert_string_equal(err_cap.text, "svc: -o \"nokey\": expected key=value\n");
	warren_daemon_free(d);

	snprintf(conf, sizeof(conf), "%s/absent.conf", dir);
	assert_int_equal(load(&d, (const char *const[]){"-c", conf, NULL}), WARREN_EXIT_CONFIG);
	assert_non_null(strstr(err_cap.text, "absent.conf: No such file or directory\n"));
	warren_daemon_free(d);
	snprintf(conf, sizeof(conf), "%s/svc.conf", dir);
}

static void test_loading_sets_the_service_and_makes_the_worker(void **state)
{
	warren_daemon *d;

	assert_int_equal(load(&d, (const char *const[]){NULL}), WARREN_EXIT_OK);
	assert_string_equal(err_cap.text, "");
	assert_string_equal(warren_config_get(warren_daemon_config(d), "worker.service"), "svc");
	assert_non_null(warren_daemon_worker(d));
	warren_daemon_free(d);

	/* A service the configuration names wins. */
	assert_int_equal(load(&d, (const char *const[]){"-o", "worker.service=other", NULL}),
	                 WARREN_EXIT_OK);
	assert_string_equal(warren_config_get(warren_daemon_config(d), "worker.service"), "other");
	warren_daemon_free(d);
}

static void test_sigterm_before_serving_stops_with_status_0(void **state)
{
	warren_daemon *d;

	assert_int_equal(load(&d, (const char *const[]){NULL}), WARREN_EXIT_OK);
	raise(SIGTERM); /* blocked since warren_daemon_new: it waits for the daemon */
	assert_true(warren_daemon_sleep(d, 5000));
	assert_int_equal(warren_daemon_run(d), WARREN_EXIT_OK);
}

/* ------------------------------------------------------- a program's keys */

static const char *const colours[] = {"red", "green", NULL};

static const warren_key limit_key = {
    .name = "app.limit",
    .type = WARREN_KEY_INT,
    .min = 1,
    .max = 100,
    .def = "10",
    .reloadable = true,
    .description = "A reloadable limit.",
};
static const warren_key url_key = {
    .name = "app.url",
    .type = WARREN_KEY_STRING,
    .description = "Where app data is.",
    .password_file = "app.url_file",
};
static const warren_key colour_key = {
    .name = "app.colour",
    .type = WARREN_KEY_ENUM,
    .def = "red",
    .values = colours,
    .description = "A colour, not reloadable.",
};

/* The error of adding key to a fresh daemon, "" when added. */
static const char *add_error(const warren_key *key)
{
	static char why[512];
	warren_daemon *d;

	why[0] = '\0';
	assert_int_equal(new_daemon(&d, (const char *const[]){NULL}), WARREN_EXIT_OK);
	if (warren_daemon_add_key(d, key, why, sizeof(why)) == WARREN_OK) {
		why[0] = '\0';
	}
	warren_daemon_free(d);
	return why;
}

static void test_each_mistake_in_a_key_is_refused_with_its_reason(void **state)
{
	assert_string_equal(add_error(&limit_key), "");
	assert_string_equal(add_error(&(warren_key){.name = "limit", .description = "x"}),
	                    "key \"limit\": want section.name of a-z, 0-9 and _ (at most 64 "
	                    "characters)");
	assert_string_equal(add_error(&(warren_key){.name = "App.limit", .description = "x"}),
	                    "key \"App.limit\": want section.name of a-z, 0-9 and _ (at most 64 "
	                    "characters)");
	assert_string_equal(add_error(&(warren_key){.name = "worker.db", .description = "x"}),
	                    "key \"worker.db\": [worker] is a section of the library's; put the "
	                    "program's keys in a section of its own");
	assert_string_equal(add_error(&(warren_key){.name = "app.n",
	                                            .type = WARREN_KEY_INT,
	                                            .min = 5,
	                                            .max = 1,
	                                            .def = "3",
	                                            .description = "x"}),
	                    "key \"app.n\": min 5 is above max 1");
	assert_string_equal(
	    add_error(&(warren_key){.name = "app.c", .type = WARREN_KEY_ENUM, .description = "x"}),
	    "key \"app.c\": an enum needs values, other types none");
	assert_string_equal(add_error(&(warren_key){.name = "app.n",
	                                            .type = WARREN_KEY_INT,
	                                            .min = 1,
	                                            .max = 9,
	                                            .def = "x",
	                                            .description = "x"}),
	                    "app.n: \"x\" is not an integer");
	assert_string_equal(
	    add_error(&(warren_key){
	        .name = "app.n", .type = WARREN_KEY_INT, .min = 1, .max = 9, .description = "x"}),
	    "app.n: \"\" is not an integer");
	assert_string_equal(add_error(&(warren_key){.name = "app.n"}),
	                    "warren_config_add_key: name and description must be set");
}

static void test_a_key_is_added_once_and_only_before_loading(void **state)
{
	warren_daemon *d;
	char why[512] = "";

	assert_int_equal(new_daemon(&d, (const char *const[]){NULL}), WARREN_EXIT_OK);
	assert_int_equal(warren_daemon_add_key(d, &limit_key, why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_daemon_add_key(d, &limit_key, why, sizeof(why)),
	                 WARREN_ERR_INVALID);
	assert_string_equal(why, "key \"app.limit\" is already a key");
	capture(&err_cap);
	assert_int_equal(warren_daemon_load(d), WARREN_EXIT_OK);
	release(&err_cap);
	assert_int_equal(warren_daemon_add_key(d, &url_key, why, sizeof(why)), WARREN_ERR_INVALID);
	assert_string_equal(why, "warren_daemon_add_key: the configuration is already loaded");
	warren_daemon_free(d);
}

/* A daemon with the three keys above, loaded with args. */
static int load_keyed(warren_daemon **d, const char *const *args)
{
	int status;

	assert_int_equal(new_daemon(d, args), WARREN_EXIT_OK);
	assert_int_equal(warren_daemon_add_key(*d, &limit_key, NULL, 0), WARREN_OK);
	assert_int_equal(warren_daemon_add_key(*d, &url_key, NULL, 0), WARREN_OK);
	assert_int_equal(warren_daemon_add_key(*d, &colour_key, NULL, 0), WARREN_OK);
	capture(&err_cap);
	status = warren_daemon_load(*d);
	release(&err_cap);
	return status;
}

static void test_a_programs_keys_are_read_like_the_librarys(void **state)
{
	warren_daemon *d;
	int64_t n = 0;

	write_conf("[app]\nlimit = 42\ncolour = green\n");
	assert_int_equal(
	    load_keyed(&d, (const char *const[]){"-c", conf, "-o", "app.limit=43", NULL}),
	    WARREN_EXIT_OK);
	assert_int_equal(warren_config_get_int(warren_daemon_config(d), "app.limit", &n),
	                 WARREN_OK);
	assert_int_equal(n, 43);
	assert_int_equal(warren_config_get_int(warren_daemon_config(d), "app.colour", &n),
	                 WARREN_OK);
	assert_int_equal(n, 1);
	assert_string_equal(warren_config_get(warren_daemon_config(d), "app.url"), "");
	assert_int_equal(warren_config_get_int(warren_daemon_config(d), "app.url", &n),
	                 WARREN_ERR_INVALID);
	warren_daemon_free(d);

	/* Validated by the key's own row, and its password kept off the command line. */
	assert_int_equal(load_keyed(&d, (const char *const[]){"-o", "app.limit=101", NULL}),
	                 WARREN_EXIT_CONFIG);
	assert_string_equal(err_cap.text, "svc: app.limit: 101 is out of range 1..100\n");
	warren_daemon_free(d);
	assert_int_equal(
	    load_keyed(&d, (const char *const[]){"-o", "app.url=https://me:pw@x/", NULL}),
	    WARREN_EXIT_CONFIG);
	assert_string_equal(err_cap.text,
	                    "svc: -o app.url: a password on the command line can be read by every "
	                    "user of this machine; put it in app.url_file or the configuration "
	                    "file\n");
	warren_daemon_free(d);
}

/* ----------------------------------------------------------------- SIGHUP */

struct reloads {
	int n;
	int64_t limit; /* app.limit as the hook saw it */
};

static void on_reload(const warren_config *cfg, void *arg)
{
	struct reloads *r = arg;

	r->n++;
	assert_int_equal(warren_config_get_int(cfg, "app.limit", &r->limit), WARREN_OK);
}

/* Sends SIGHUP to the daemon and lets it handle it; stderr in err_cap.text. */
static void hangup(warren_daemon *d)
{
	capture(&err_cap);
	raise(SIGHUP);
	assert_false(warren_daemon_sleep(d, 100));
	release(&err_cap);
}

static void test_sighup_reloads_exactly_the_keys_marked_reloadable(void **state)
{
	warren_daemon *d;
	struct reloads r = {0};
	const warren_config *cfg;

	write_conf("[worker]\nthreads = 2\ngrace = 1s\n[log]\nlevel = error\n"
	           "[app]\nlimit = 5\ncolour = red\n");
	assert_int_equal(load_keyed(&d, (const char *const[]){"-c", conf, NULL}), WARREN_EXIT_OK);
	warren_daemon_on_reload(d, on_reload, &r);
	cfg = warren_daemon_config(d);

	write_conf("[worker]\nthreads = 3\ngrace = 2s\n[log]\nlevel = info\n"
	           "[app]\nlimit = 6\ncolour = green\n");
	hangup(d);
	/* Reloadable in the table: the library's worker.grace and log.level, and
	 * the program's app.limit. */
	assert_string_equal(warren_config_get(cfg, "worker.grace"), "2000ms");
	assert_string_equal(warren_config_get(cfg, "log.level"), "info");
	assert_string_equal(warren_config_get(cfg, "app.limit"), "6");
	/* Not reloadable: they keep their running values, and the log says so. */
	assert_string_equal(warren_config_get(cfg, "worker.threads"), "2");
	assert_string_equal(warren_config_get(cfg, "app.colour"), "red");
	assert_non_null(strstr(err_cap.text, "msg=\"not reloaded, a restart applies them: "
	                                     "worker.threads,app.colour\""));
	assert_non_null(strstr(err_cap.text, "msg=\"configuration reloaded\" "
	                                     "keys=worker.grace,log.level,app.limit\n"));
	assert_int_equal(r.n, 1);
	assert_int_equal(r.limit, 6);

	/* A bad file is refused whole: nothing changes, the hook does not run. */
	write_conf("[log]\nlevel = debug\n[app]\nlimit = 0\n");
	hangup(d);
	assert_non_null(strstr(err_cap.text, "msg=\"reload refused, keeping the running "
	                                     "configuration: "));
	assert_non_null(strstr(err_cap.text, "app.limit: 0 is out of range 1..100\"\n"));
	assert_string_equal(warren_config_get(cfg, "log.level"), "info");
	assert_string_equal(warren_config_get(cfg, "app.limit"), "6");
	assert_int_equal(r.n, 1);
	warren_daemon_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_help_and_version_answer_on_stdout_with_no_daemon),
	    cmocka_unit_test(test_a_daemon_without_a_program_name_is_refused),
	    cmocka_unit_test(test_each_usage_error_is_worded_and_exits_2),
	    cmocka_unit_test(test_a_bad_configuration_exits_3_with_its_reason),
	    cmocka_unit_test(test_loading_sets_the_service_and_makes_the_worker),
	    cmocka_unit_test(test_sigterm_before_serving_stops_with_status_0),
	    cmocka_unit_test(test_each_mistake_in_a_key_is_refused_with_its_reason),
	    cmocka_unit_test(test_a_key_is_added_once_and_only_before_loading),
	    cmocka_unit_test(test_a_programs_keys_are_read_like_the_librarys),
	    cmocka_unit_test(test_sighup_reloads_exactly_the_keys_marked_reloadable),
	};

	return cmocka_run_group_tests_name("daemon", tests, setup, teardown);
}
