/* test_config_docs.c: the operator-facing copies of the configuration table
 * agree with config_defs[]: warren.conf(5) documents every key, and no other,
 * with its type, range, default and SIGHUP behaviour; config/warren.conf lists
 * every key commented out at its default under its section; user-service(8)
 * documents the keys user-service adds (src/workers/user/keys.c) the same
 * way; and the shipped files (and the page's example file) load.
 *
 * Files are found under $WARREN_SRC_DIR, or the current directory (the test
 * runner runs from the top of the source tree). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "user/keys.h"

/* ------------------------------------------------------------- helpers */

struct lines {
	char **line; /* without their newlines */
	size_t n;
};

static const char *src_path(const char *rel)
{
	static char buf[4096];
	const char *dir = getenv("WARREN_SRC_DIR");

	snprintf(buf, sizeof(buf), "%s/%s", dir != NULL && dir[0] != '\0' ? dir : ".", rel);
	return buf;
}

static struct lines read_lines(const char *rel)
{
	struct lines l = {0};
	const char *path = src_path(rel);
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t cap = 0;
	ssize_t len;

	if (f == NULL) {
		print_error("cannot open %s (set WARREN_SRC_DIR to the source tree)\n", path);
		fail();
	}
	while ((len = getline(&buf, &cap, f)) >= 0) {
		while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
			buf[--len] = '\0';
		}
		l.line = realloc(l.line, (l.n + 1) * sizeof(*l.line));
		assert_non_null(l.line);
		l.line[l.n] = strdup(buf);
		assert_non_null(l.line[l.n]);
		l.n++;
	}
	free(buf);
	fclose(f);
	return l;
}

static void free_lines(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->line[i]);
	}
	free(l->line);
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* "broker" of "broker.url" into sec, "url" into name. */
static void split_key(const char *key, char *sec, size_t seclen, const char **name)
{
	const char *dot = strchr(key, '.');

	assert_non_null(dot);
	snprintf(sec, seclen, "%.*s", (int)(dot - key), key);
	*name = dot + 1;
}

/* v in the largest unit dividing it, as the page writes ranges: 1h, 100ms, 128M. */
static void scaled(int64_t v, bool duration, char *buf, size_t len)
{
	static const struct {
		const char *name;
		int64_t scale;
	} dur[] = {{"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}},
	  size[] = {{"G", 1 << 30}, {"M", 1 << 20}, {"k", 1 << 10}, {"", 1}};
	size_t i = 0;

	if (v == 0) {
		snprintf(buf, len, "0");
		return;
	}
	while (v % (duration ? dur[i].scale : size[i].scale) != 0) {
		i++;
	}
	snprintf(buf, len, "%" PRId64 "%s", v / (duration ? dur[i].scale : size[i].scale),
	         duration ? dur[i].name : size[i].name);
}

/* The page's "Type:" line for a row. */
static void type_line(const struct config_def *d, char *buf, size_t len)
{
	char lo[32], hi[32];
	size_t used;

	switch (d->type) {
	case CONFIG_STRING:
		snprintf(buf, len, "Type: string.");
		return;
	case CONFIG_BOOL:
		snprintf(buf, len, "Type: boolean.");
		return;
	case CONFIG_INT:
		snprintf(buf, len, "Type: integer, %" PRId64 " to %" PRId64 ".", d->min, d->max);
		return;
	case CONFIG_DURATION:
	case CONFIG_SIZE:
		scaled(d->min, d->type == CONFIG_DURATION, lo, sizeof(lo));
		scaled(d->max, d->type == CONFIG_DURATION, hi, sizeof(hi));
		snprintf(buf, len, "Type: %s, %s to %s.",
		         d->type == CONFIG_DURATION ? "duration" : "size", lo, hi);
		return;
	case CONFIG_ENUM:
		snprintf(buf, len, "Type: one of");
		for (size_t i = 0; d->enum_values[i] != NULL; i++) {
			used = strlen(buf);
			snprintf(buf + used, len - used, "%s %s", i > 0 ? "," : "",
			         d->enum_values[i]);
		}
		used = strlen(buf);
		snprintf(buf + used, len - used, ".");
		return;
	}
	fail_msg("%s: unknown type %d", d->key, (int)d->type);
}

/* A config with every key set to a valid value other than its default. */
static warren_config *config_off_default(void)
{
	warren_config *cfg = warren_config_new(), *fresh = warren_config_new();

	assert_non_null(cfg);
	assert_non_null(fresh);
	for (int i = 0; i < CFG__COUNT; i++) {
		const struct config_def *d = &config_defs[i];
		int64_t now = d->type == CONFIG_STRING ? 0 : config_int(cfg, (config_id)i);
		int64_t v = d->min != now ? d->min : d->max;
		char text[64], why[300] = "";

		switch (d->type) {
		case CONFIG_STRING:
			snprintf(text, sizeof(text), "%s",
			         i == CFG_BROKER_URL       ? "amqp://elsewhere:5673/"
			         : i == CFG_METRICS_LISTEN || i == CFG_CLIENT_METRICS_LISTEN
			                 ? "other:1"
			                 : "other");
			break;
		case CONFIG_BOOL:
			snprintf(text, sizeof(text), "%s", now ? "no" : "yes");
			break;
		case CONFIG_DURATION:
			snprintf(text, sizeof(text), "%" PRId64 "ms", v);
			break;
		case CONFIG_INT:
		case CONFIG_SIZE:
		case CONFIG_ENUM:
			if (d->type == CONFIG_ENUM) {
				v = now == 0 ? 1 : 0;
				snprintf(text, sizeof(text), "%s", d->enum_values[v]);
			} else {
				snprintf(text, sizeof(text), "%" PRId64, v);
			}
			break;
		}
		if (warren_config_set(cfg, d->key, text, why, sizeof(why)) != WARREN_OK) {
			fail_msg("setting %s=%s: %s", d->key, text, why);
		}
		if (strcmp(warren_config_get(cfg, d->key), warren_config_get(fresh, d->key)) == 0) {
			fail_msg("%s: %s is its default", d->key, text);
		}
	}
	warren_config_free(fresh);
	return cfg;
}

/* Every key of cfg has its default; prints each that has not. */
static void assert_all_defaults(const warren_config *cfg, const char *what)
{
	warren_config *fresh = warren_config_new();
	int bad = 0;

	assert_non_null(fresh);
	for (int i = 0; i < CFG__COUNT; i++) {
		const char *key = config_defs[i].key;

		if (strcmp(warren_config_get(cfg, key), warren_config_get(fresh, key)) != 0) {
			print_error("%s: %s is \"%s\", its default is \"%s\"\n", what, key,
			            warren_config_get(cfg, key), warren_config_get(fresh, key));
			bad++;
		}
	}
	warren_config_free(fresh);
	assert_int_equal(bad, 0);
}

static void load_ok(warren_config *cfg, const char *path)
{
	char why[600] = "";

	if (warren_config_load(cfg, path, why, sizeof(why)) != WARREN_OK) {
		fail_msg("loading %s: %s", path, why);
	}
}

/* Loads text as a file (what), through a temporary file removed at once. */
static void load_text_ok(warren_config *cfg, const char *text, const char *what)
{
	char path[] = "/tmp/warren-docs-XXXXXX", why[600] = "";
	int fd = mkstemp(path);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	bool written = f != NULL && fputs(text, f) >= 0;
	warren_err err;

	if (f != NULL) {
		written = fclose(f) == 0 && written;
	}
	err = written ? warren_config_load(cfg, path, why, sizeof(why)) : WARREN_ERR_CONFIG;
	if (fd >= 0) {
		unlink(path);
	}
	assert_true(written);
	if (err != WARREN_OK) {
		fail_msg("loading %s: %s", what, why);
	}
}

/* ------------------------------------------------------- warren.conf(5) */

#define PAGE "man/warren.conf.5"

/* The item of key in the page: its first and past-the-end line. */
struct item {
	size_t start, end;
	int count;        /* how many ".It Cm KEY" lines there are */
	char section[64]; /* of the last ".Ss [section]" before it */
};

static bool item_ends(const char *line)
{
	return starts_with(line, ".It") || starts_with(line, ".El") || starts_with(line, ".Ss") ||
	       starts_with(line, ".Sh");
}

static struct item find_item(const struct lines *page, const char *key)
{
	struct item it = {0};
	char want[160], section[64] = "";

	snprintf(want, sizeof(want), ".It Cm %s", key);
	for (size_t i = 0; i < page->n; i++) {
		if (sscanf(page->line[i], ".Ss [%63[^]]]", section) == 1) {
			continue;
		}
		if (strcmp(page->line[i], want) != 0) {
			continue;
		}
		if (it.count++ == 0) {
			it.start = i;
			it.end = i + 1;
			while (it.end < page->n && !item_ends(page->line[it.end])) {
				it.end++;
			}
			snprintf(it.section, sizeof(it.section), "%s", section);
		}
	}
	return it;
}

/* How many lines of the item are exactly want, and how many start with prefix. */
static void count_in_item(const struct lines *page, const struct item *it, const char *want,
                          const char *prefix, int *exact, int *prefixed)
{
	*exact = *prefixed = 0;
	for (size_t i = it->start + 1; i < it->end; i++) {
		*exact += strcmp(page->line[i], want) == 0;
		*prefixed += starts_with(page->line[i], prefix);
	}
}

/* Checks one fact line of an item: exactly one line starts with prefix, and
 * it is want. Returns the number of problems (printed). */
static int check_fact(const char *path, const struct lines *page, const struct item *it,
                      const char *key, const char *want, const char *prefix)
{
	int exact, prefixed;

	count_in_item(page, it, want, prefix, &exact, &prefixed);
	if (exact == 1 && prefixed == 1) {
		return 0;
	}
	print_error("%s: item %s: want exactly one line \"%s\" (found it %d times, %d lines "
	            "starting \"%s\")\n",
	            path, key, want, exact, prefixed, prefix);
	return 1;
}

/* The item of row d in the page at path: under its section, with its type,
 * default, reload sentence and description. Returns the problems (printed). */
static int check_item(const char *path, const struct lines *page, const struct config_def *d)
{
	struct item it = find_item(page, d->key);
	char want[512], sec[64];
	const char *name;
	int bad = 0, exact, reloaded, not_reloaded;

	if (it.count != 1) {
		print_error("%s: want one line \".It Cm %s\", found %d\n", path, d->key, it.count);
		return 1;
	}
	split_key(d->key, sec, sizeof(sec), &name);
	if (strcmp(it.section, sec) != 0) {
		print_error("%s: %s is under \".Ss [%s]\", not \".Ss [%s]\"\n", path, d->key,
		            it.section, sec);
		bad++;
	}
	type_line(d, want, sizeof(want));
	bad += check_fact(path, page, &it, d->key, want, "Type:");
	if (d->def[0] == '\0') {
		snprintf(want, sizeof(want), "Default: empty.");
	} else {
		snprintf(want, sizeof(want), "Default: %s.", d->def);
	}
	bad += check_fact(path, page, &it, d->key, want, "Default:");
	/* One of the two reload sentences, and the right one. */
	count_in_item(page, &it, "Reloaded on SIGHUP.", "Reloaded on SIGHUP.", &reloaded, &exact);
	count_in_item(page, &it, "Not reloaded on SIGHUP.", "Not reloaded on SIGHUP.",
	              &not_reloaded, &exact);
	if (reloaded + not_reloaded != 1 || reloaded != (d->reload ? 1 : 0)) {
		print_error("%s: item %s: want exactly one line \"%s\"\n", path, d->key,
		            d->reload ? "Reloaded on SIGHUP." : "Not reloaded on SIGHUP.");
		bad++;
	}
	/* The description's first words, so that the page says what the key is. */
	snprintf(want, sizeof(want), "%.12s", d->desc);
	if (it.start + 1 >= it.end || !starts_with(page->line[it.start + 1], want)) {
		print_error("%s: item %s: want its description, starting \"%s\"\n", path, d->key,
		            want);
		bad++;
	}
	return bad;
}

static void test_page_documents_every_key(void **state)
{
	struct lines page = read_lines(PAGE);
	int bad = 0;

	for (int i = 0; i < CFG__COUNT; i++) {
		bad += check_item(PAGE, &page, &config_defs[i]);
	}
	free_lines(&page);
	assert_int_equal(bad, 0);
}

static void test_page_documents_no_other_key(void **state)
{
	struct lines page = read_lines(PAGE);
	int bad = 0, items = 0;

	for (size_t i = 0; i < page.n; i++) {
		const char *key;

		if (!starts_with(page.line[i], ".It Cm ")) {
			continue;
		}
		key = page.line[i] + strlen(".It Cm ");
		items++;
		if (config_lookup(key) < 0) {
			print_error(PAGE ":%zu: \"%s\" is not a key of config_defs\n", i + 1, key);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
	assert_int_equal(items, CFG__COUNT);
	free_lines(&page);
}

/* The page's first example is a whole file: it must load, comment and all. */
static void test_page_example_loads(void **state)
{
	struct lines page = read_lines(PAGE);
	warren_config *cfg = warren_config_new();
	char *text = calloc(1, 1);
	size_t i = 0, len = 0;

	assert_non_null(cfg);
	while (i < page.n && strcmp(page.line[i], ".Sh EXAMPLES") != 0) {
		i++;
	}
	while (i < page.n && !starts_with(page.line[i], ".Bd -literal")) {
		i++;
	}
	assert_true(i < page.n);
	for (i++; i < page.n && strcmp(page.line[i], ".Ed") != 0; i++) {
		len += strlen(page.line[i]) + 1;
		text = realloc(text, len + 1);
		assert_non_null(text);
		strcat(strcat(text, page.line[i]), "\n");
	}
	assert_true(i < page.n);
	load_text_ok(cfg, text, "the first example of " PAGE);
	assert_string_equal(warren_config_get(cfg, "worker.threads"), "16");
	assert_string_equal(warren_config_get(cfg, "worker.grace"), "20000ms");
	assert_string_equal(warren_config_get(cfg, "log.level"), "debug");
	free(text);
	warren_config_free(cfg);
	free_lines(&page);
}

/* ---------------------------------------------------- config/warren.conf */

#define EXAMPLE "config/warren.conf"

/* "# name = value" or "#name=value": the name, into name; false otherwise. */
static bool commented_pair(const char *line, char *name, size_t len)
{
	size_t n;

	if (line[0] != '#') {
		return false;
	}
	line += 1 + strspn(line + 1, " \t");
	n = strspn(line, "abcdefghijklmnopqrstuvwxyz0123456789_");
	if (n == 0 || n >= len || line[n + strspn(line + n, " \t")] != '=') {
		return false;
	}
	snprintf(name, len, "%.*s", (int)n, line);
	return true;
}

static void test_example_lists_every_key(void **state)
{
	struct lines ex = read_lines(EXAMPLE);
	int found[CFG__COUNT] = {0}, bad = 0;
	char section[64] = "";

	for (size_t i = 0; i < ex.n; i++) {
		const char *line = ex.line[i];
		char name[64], key[160], want[512];
		const struct config_def *d;
		int id;

		if (sscanf(line, "[%63[^]]]", section) == 1 || line[0] == '\0') {
			continue;
		}
		if (line[0] != '#' && line[0] != ';') {
			print_error(EXAMPLE ":%zu: \"%s\" is not a comment: the file must change "
			                    "nothing\n",
			            i + 1, line);
			bad++;
			continue;
		}
		if (!commented_pair(line, name, sizeof(name))) {
			continue;
		}
		snprintf(key, sizeof(key), "%s.%s", section, name);
		id = config_lookup(key);
		if (id < 0) {
			print_error(EXAMPLE ":%zu: %s is not a key of config_defs\n", i + 1, key);
			bad++;
			continue;
		}
		d = &config_defs[id];
		found[id]++;
		snprintf(want, sizeof(want), "# %s = %s", name,
		         d->def[0] != '\0' ? d->def : "\"\"");
		if (strcmp(line, want) != 0) {
			print_error(EXAMPLE ":%zu: want \"%s\", found \"%s\"\n", i + 1, want, line);
			bad++;
		}
		snprintf(want, sizeof(want), "# %s", d->desc);
		if (i == 0 || strcmp(ex.line[i - 1], want) != 0) {
			print_error(EXAMPLE
			            ":%zu: want the description \"%s\" on the line before\n",
			            i + 1, want);
			bad++;
		}
	}
	for (int i = 0; i < CFG__COUNT; i++) {
		if (found[i] != 1) {
			char sec[64];
			const char *name;

			split_key(config_defs[i].key, sec, sizeof(sec), &name);
			print_error(EXAMPLE ": want one line \"# %s = ...\" under [%s], found %d\n",
			            name, sec, found[i]);
			bad++;
		}
	}
	free_lines(&ex);
	assert_int_equal(bad, 0);
}

/* As shipped it loads and changes nothing. */
static void test_example_loads_as_defaults(void **state)
{
	warren_config *cfg = warren_config_new();

	assert_non_null(cfg);
	load_ok(cfg, src_path(EXAMPLE));
	assert_all_defaults(cfg, EXAMPLE);
	warren_config_free(cfg);
}

/* With every key uncommented it sets every key to its default: each line is a
 * real setting of the right key, in a form the parser takes. */
static void test_example_uncommented_sets_defaults(void **state)
{
	struct lines ex = read_lines(EXAMPLE);
	warren_config *cfg = config_off_default();
	char name[64], *text = calloc(1, 1);
	size_t len = 0;

	for (size_t i = 0; i < ex.n; i++) {
		const char *line = ex.line[i];

		if (commented_pair(line, name, sizeof(name))) {
			line += 1 + strspn(line + 1, " \t");
		}
		len += strlen(line) + 1;
		text = realloc(text, len + 1);
		assert_non_null(text);
		strcat(strcat(text, line), "\n");
	}
	load_text_ok(cfg, text, EXAMPLE " uncommented");
	assert_all_defaults(cfg, EXAMPLE " uncommented");
	free(text);
	warren_config_free(cfg);
	free_lines(&ex);
}

/* ------------------------------------------------- user-service's own keys */

#define USER_PAGE "man/user-service.8"

/* A config of the library's keys and user-service's (keys.c). */
static warren_config *user_config(void)
{
	warren_config *cfg = warren_config_new();
	char why[300] = "";

	assert_non_null(cfg);
	for (size_t i = 0; i < user_nkeys; i++) {
		if (warren_config_add_key(cfg, &user_keys[i], why, sizeof(why)) != WARREN_OK) {
			fail_msg("%s: %s", user_keys[i].name, why);
		}
	}
	return cfg;
}

/* user-service(8) documents each key user-service adds, as warren.conf(5)
 * does the library's; warren.conf(5) documents none of them (see
 * test_page_documents_no_other_key). */
static void test_user_service_page_documents_its_keys(void **state)
{
	struct lines page = read_lines(USER_PAGE);
	warren_config *cfg = user_config();
	int bad = 0;

	assert_int_equal(config_count(cfg), CFG__COUNT + (int)user_nkeys);
	for (int id = CFG__COUNT; id < config_count(cfg); id++) {
		bad += check_item(USER_PAGE, &page, config_def_at(cfg, id));
	}
	/* And no other: every item of its CONFIGURATION section is one of them. */
	for (size_t i = 0, in = 0; i < page.n; i++) {
		if (starts_with(page.line[i], ".Sh ")) {
			in = strcmp(page.line[i], ".Sh CONFIGURATION") == 0;
		} else if (in && starts_with(page.line[i], ".It Cm ") &&
		           config_lookup_in(cfg, page.line[i] + 7) < CFG__COUNT) {
			print_error(USER_PAGE ":%zu: \"%s\" is not a key of user-service's\n",
			            i + 1, page.line[i] + 7);
			bad++;
		}
	}
	warren_config_free(cfg);
	free_lines(&page);
	assert_int_equal(bad, 0);
}

/* ----------------------------------------------- config/user-service.conf */

static void test_user_service_conf_loads(void **state)
{
	warren_config *cfg = user_config();

	load_ok(cfg, src_path("config/user-service.conf"));
	assert_string_equal(warren_config_get(cfg, "worker.service"), "user");
	assert_string_equal(warren_config_get(cfg, "db.conninfo_file"), "db-conninfo");
	assert_string_equal(warren_config_get(cfg, "db.conninfo"), "");
	warren_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_page_documents_every_key),
	    cmocka_unit_test(test_page_documents_no_other_key),
	    cmocka_unit_test(test_page_example_loads),
	    cmocka_unit_test(test_example_lists_every_key),
	    cmocka_unit_test(test_example_loads_as_defaults),
	    cmocka_unit_test(test_example_uncommented_sets_defaults),
	    cmocka_unit_test(test_user_service_page_documents_its_keys),
	    cmocka_unit_test(test_user_service_conf_loads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
