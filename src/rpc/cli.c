/* cli.c: the configuration steps shared by rpc-call, rpc-dlq and the worker
 * daemons, so that they all read -c and -o the same way. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "exitcodes.h"

bool cli_add_override(struct cli_config *cc, const char *arg)
{
	if (cc->noverrides >= CLI_MAX_OVERRIDES) {
		return false;
	}
	cc->overrides[cc->noverrides++] = arg;
	return true;
}

int cli_take_config_option(struct cli_config *cc, const char *prog, int opt, const char *arg)
{
	if (opt == 'c') {
		cc->file = arg;
		return EXITCODE_OK;
	}
	if (!cli_add_override(cc, arg)) {
		fprintf(stderr, "%s: too many -o options\n", prog);
		return EXITCODE_USAGE;
	}
	return EXITCODE_OK;
}

/* Whether a URL list ("amqp://user:password@host/,...") holds a password
 * other than RabbitMQ's well-known "guest" (no secret: the broker lets
 * guest in from localhost only). */
static bool url_has_password(const char *urls)
{
	for (const char *u = urls; *u != '\0';) {
		size_t n = strcspn(u, ",");
		const char *scheme = strstr(u, "://");

		if (scheme != NULL && scheme < u + n) {
			const char *user = scheme + 3;
			size_t auth = strcspn(user, "@/,");
			const char *colon = memchr(user, ':', auth);

			if (user[auth] == '@' && colon != NULL &&
			    !(user + auth - colon - 1 == 5 && memcmp(colon + 1, "guest", 5) == 0)) {
				return true;
			}
		}
		u += n + (u[n] == ',');
	}
	return false;
}

/* Whether a libpq connection string sets password: a keyword/value pair
 * (= with spaces around it or not), or a URI's query parameter
 * (postgresql://host/db?password=...). */
static bool conninfo_has_password(const char *conninfo)
{
	for (const char *p = strstr(conninfo, "password"); p != NULL;
	     p = strstr(p + 1, "password")) {
		const char *q = p + 8;
		bool keyword = p == conninfo || p[-1] == ' ' || p[-1] == '\t';
		bool query = p > conninfo && (p[-1] == '?' || p[-1] == '&');

		if (query && *q == '=') {
			return true;
		}
		q += strspn(q, " \t");
		if (keyword && *q == '=') {
			return true;
		}
	}
	return false;
}

/* A -o argument that puts a password on the command line, where every
 * user of the machine can read it (ps, /proc): refused, with where the
 * password belongs instead. Which keys may carry one is the table's to say
 * (config_password_file), a program's own keys included. */
static bool secret_on_command_line(const warren_config *cfg, const char *arg, char *errstr,
                                   size_t errlen)
{
	size_t klen = strcspn(arg, "=");
	const char *value = arg[klen] == '=' ? arg + klen + 1 : "";
	const char *where;

	while (klen > 0 && (arg[klen - 1] == ' ' || arg[klen - 1] == '\t')) {
		klen--;
	}
	value += strspn(value, " \t");
	where = config_password_file(cfg, arg, klen);
	if (where == NULL || !(url_has_password(value) || conninfo_has_password(value))) {
		return false;
	}
	snprintf(errstr, errlen,
	         "-o %.*s: a password on the command line can be read by every user of this "
	         "machine; put it in %s or the configuration file",
	         (int)klen, arg, where);
	return true;
}

int cli_fill_config(warren_config *cfg, const struct cli_config *cc, const char *url_env,
                    char *errstr, size_t errlen)
{
	const char *url = url_env != NULL ? getenv(url_env) : NULL;

	if (cc->file != NULL && warren_config_load(cfg, cc->file, errstr, errlen) != WARREN_OK) {
		return -1;
	}
	if (url != NULL && url[0] != '\0') {
		char why[512];

		if (warren_config_set(cfg, "broker.url", url, why, sizeof(why)) != WARREN_OK) {
			snprintf(errstr, errlen, "%s: %s", url_env, why);
			return -1;
		}
	}
	for (int i = 0; i < cc->noverrides; i++) {
		if (secret_on_command_line(cfg, cc->overrides[i], errstr, errlen) ||
		    warren_config_set_arg(cfg, cc->overrides[i], errstr, errlen) != WARREN_OK) {
			return -1;
		}
	}
	return 0;
}

warren_config *cli_build_config(const struct cli_config *cc, const char *url_env, char *errstr,
                                size_t errlen)
{
	warren_config *cfg = warren_config_new();

	if (cfg == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	if (cli_fill_config(cfg, cc, url_env, errstr, errlen) != 0) {
		warren_config_free(cfg);
		return NULL;
	}
	return cfg;
}

/* Whether arg ("--name" or "--name=value") is the long option of longs
 * whose value is val. */
static bool is_long_option(const char *arg, int val, const struct option *longs)
{
	size_t len = strcspn(arg + 2, "=");

	for (; longs != NULL && longs->name != NULL; longs++) {
		if (longs->val == val && strlen(longs->name) == len &&
		    strncmp(longs->name, arg + 2, len) == 0) {
			return true;
		}
	}
	return false;
}

void cli_option_error(const char *prog, int opt, char **argv, const struct option *longs)
{
	const char *arg = argv[optind - 1];
	bool dashes = strncmp(arg, "--", 2) == 0;
	char name[64];

	/* getopt_long says an unknown long option with optopt 0, an option
	 * without its value is the last argument, and a long option given a
	 * value it does not take has its own value in optopt. Otherwise it is
	 * a short option, perhaps inside a group such as -jc. */
	if (optopt == 0 || (dashes && (opt == ':' || is_long_option(arg, optopt, longs)))) {
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(arg, "="), arg);
	} else {
		snprintf(name, sizeof(name), "-%c", optopt);
	}
	if (opt == ':') {
		fprintf(stderr, "%s: option %s needs a value\n", prog, name);
	} else {
		fprintf(stderr, "%s: unknown option %s\n", prog, name);
	}
}

int cli_parse_daemon_args(int argc, char **argv, const char *prog, struct cli_config *cc)
{
	static const struct option longs[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"option", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	int opt;

	/* The leading ':' lets us word the errors ourselves. */
	while ((opt = getopt_long(argc, argv, ":c:o:hV", longs, NULL)) != -1) {
		switch (opt) {
		case 'c':
		case 'o':
			if (cli_take_config_option(cc, prog, opt, optarg) != EXITCODE_OK) {
				return EXITCODE_USAGE;
			}
			break;
		case 'h':
			printf(CLI_DAEMON_USAGE, prog);
			cc->done = true;
			return EXITCODE_OK;
		case 'V':
			printf("%s %s\n", prog, WARREN_VERSION);
			cc->done = true;
			return EXITCODE_OK;
		default:
			cli_option_error(prog, opt, argv, longs);
			fprintf(stderr, CLI_DAEMON_USAGE, prog);
			return EXITCODE_USAGE;
		}
	}
	if (optind == argc) {
		return EXITCODE_OK;
	}
	fprintf(stderr, "%s: unexpected argument \"%s\"\n", prog, argv[optind]);
	return EXITCODE_USAGE;
}
