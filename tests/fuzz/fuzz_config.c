/* fuzz_config.c: arbitrary text as a configuration file (warren_config_load)
 * and, line by line, as -o arguments (warren_config_set_arg). A refused file
 * or argument must leave the config exactly as it was; whatever is accepted
 * must read back through warren_config_get in a form that sets the same
 * value again. The file is a memfd, rewritten for each input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "oracle.h"

/* What warren_config_get shows of every key: a string key's text, and the
 * number behind any other key's (its canonical text is made from that
 * number). Read through the internal getters, which index by id: looking
 * each key up by name, as warren_config_get does, took most of the run. */
struct snapshot {
	char *str[CFG__COUNT]; /* string keys only */
	int64_t num[CFG__COUNT];
};

static void snapshot_take(const warren_config *cfg, struct snapshot *s)
{
	for (int i = 0; i < CFG__COUNT; i++) {
		s->str[i] = NULL;
		s->num[i] = 0;
		if (config_defs[i].type == CONFIG_STRING) {
			s->str[i] = strdup(config_str(cfg, (config_id)i));
			ORACLE_CHECK(s->str[i] != NULL, "out of memory");
		} else {
			s->num[i] = config_int(cfg, (config_id)i);
		}
	}
}

static void snapshot_free(struct snapshot *s)
{
	for (int i = 0; i < CFG__COUNT; i++) {
		free(s->str[i]);
	}
}

static void check_unchanged(const warren_config *cfg, const struct snapshot *s, const char *what)
{
	for (int i = 0; i < CFG__COUNT; i++) {
		if (s->str[i] != NULL) {
			ORACLE_CHECK(strcmp(config_str(cfg, (config_id)i), s->str[i]) == 0,
			             "%s changed %s from \"%s\" to \"%s\"", what,
			             config_defs[i].key, s->str[i], config_str(cfg, (config_id)i));
		} else {
			ORACLE_CHECK(config_int(cfg, (config_id)i) == s->num[i],
			             "%s changed %s from %lld to %lld", what, config_defs[i].key,
			             (long long)s->num[i],
			             (long long)config_int(cfg, (config_id)i));
		}
	}
}

/* The canonical text of key id, set again, must be accepted and unchanged. */
static void check_canonical(warren_config *cfg, int id)
{
	const char *key = config_defs[id].key;
	char *text = strdup(warren_config_get(cfg, key));
	char why[512] = "";

	ORACLE_CHECK(text != NULL, "out of memory");
	ORACLE_CHECK(warren_config_set(cfg, key, text, why, sizeof(why)) == WARREN_OK,
	             "%s: its own value \"%s\" is refused: %s", key, text, why);
	ORACLE_CHECK(strcmp(warren_config_get(cfg, key), text) == 0,
	             "%s: \"%s\" set again reads back as \"%s\"", key, text,
	             warren_config_get(cfg, key));
	free(text);
}

static void check_load(warren_config *cfg, const char *path)
{
	struct snapshot before;
	char why[512] = "";

	snapshot_take(cfg, &before);
	if (warren_config_load(cfg, path, why, sizeof(why)) == WARREN_OK) {
		for (int i = 0; i < CFG__COUNT; i++) {
			check_canonical(cfg, i);
		}
	} else {
		ORACLE_CHECK(why[0] != '\0', "a refused file did not say why");
		check_unchanged(cfg, &before, "a refused file");
	}
	snapshot_free(&before);
}

static void check_set_arg(warren_config *cfg, const char *arg)
{
	struct snapshot before;
	char why[512] = "";
	const char *eq = strchr(arg, '=');

	snapshot_take(cfg, &before);
	if (warren_config_set_arg(cfg, arg, why, sizeof(why)) == WARREN_OK) {
		char key[256];

		ORACLE_CHECK(eq != NULL && (size_t)(eq - arg) < sizeof(key),
		             "-o \"%s\" accepted without a known key", arg);
		memcpy(key, arg, (size_t)(eq - arg));
		key[eq - arg] = '\0';
		ORACLE_CHECK(config_lookup(key) >= 0, "-o \"%s\" accepted an unknown key", arg);
		check_canonical(cfg, config_lookup(key));
	} else {
		ORACLE_CHECK(why[0] != '\0', "a refused -o \"%s\" did not say why", arg);
		check_unchanged(cfg, &before, "a refused -o");
	}
	snapshot_free(&before);
}

/* Each line of the input (up to a NUL byte in it) as one -o argument. */
static void set_each_line(warren_config *cfg, const uint8_t *data, size_t size)
{
	while (size > 0) {
		const uint8_t *nl = memchr(data, '\n', size);
		size_t len = nl != NULL ? (size_t)(nl - data) : size;
		char *arg = strndup((const char *)data, len);

		ORACLE_CHECK(arg != NULL, "out of memory");
		check_set_arg(cfg, arg);
		free(arg);
		data += len + (nl != NULL);
		size -= len + (nl != NULL);
	}
}

/* The memfd the input is written to, and a path that opens it. */
static int file_fd = -1;
static char file_path[64];

static void write_file(const uint8_t *data, size_t size)
{
	if (file_fd < 0) {
		file_fd = memfd_create("fuzz_config", 0);
		ORACLE_CHECK(file_fd >= 0, "memfd_create failed");
		snprintf(file_path, sizeof(file_path), "/proc/self/fd/%d", file_fd);
	}
	ORACLE_CHECK(ftruncate(file_fd, 0) == 0, "ftruncate failed");
	ORACLE_CHECK(size == 0 || pwrite(file_fd, data, size, 0) == (ssize_t)size, "pwrite failed");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	warren_config *cfg = warren_config_new();

	ORACLE_CHECK(cfg != NULL, "warren_config_new failed");
	write_file(data, size);
	/* Into a fresh config, then, after the -o arguments, into one that
	 * holds other values than the defaults. */
	check_load(cfg, file_path);
	set_each_line(cfg, data, size);
	check_load(cfg, file_path);
	warren_config_free(cfg);
	return 0;
}
