/* cli.c: the configuration steps shared by rpc-call, rpc-dlq and the worker
 * daemons, so that they all read -c and -o the same way. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

bool cli_add_override(struct cli_config *cc, const char *arg)
{
	if (cc->noverrides >= CLI_MAX_OVERRIDES) {
		return false;
	}
	cc->overrides[cc->noverrides++] = arg;
	return true;
}

warren_config *cli_build_config(const struct cli_config *cc, const char *url_env, char *errstr,
                                size_t errlen)
{
	warren_config *cfg = warren_config_new();
	const char *url = url_env != NULL ? getenv(url_env) : NULL;

	if (cfg == NULL) {
		snprintf(errstr, errlen, "out of memory");
		return NULL;
	}
	if (cc->file != NULL && warren_config_load(cfg, cc->file, errstr, errlen) != WARREN_OK) {
		goto fail;
	}
	if (url != NULL && url[0] != '\0') {
		char why[512];

		if (warren_config_set(cfg, "broker.url", url, why, sizeof(why)) != WARREN_OK) {
			snprintf(errstr, errlen, "%s: %s", url_env, why);
			goto fail;
		}
	}
	for (int i = 0; i < cc->noverrides; i++) {
		if (warren_config_set_arg(cfg, cc->overrides[i], errstr, errlen) != WARREN_OK) {
			goto fail;
		}
	}
	return cfg;
fail:
	warren_config_free(cfg);
	return NULL;
}

int cli_parse_daemon_args(int argc, char **argv, const char *prog, struct cli_config *cc)
{
	int opt;

	/* The leading ':' lets us word the errors ourselves. */
	while ((opt = getopt(argc, argv, ":c:o:hV")) != -1) {
		switch (opt) {
		case 'c':
			cc->file = optarg;
			break;
		case 'o':
			if (!cli_add_override(cc, optarg)) {
				fprintf(stderr, "%s: too many -o options\n", prog);
				return 2;
			}
			break;
		case 'h':
			printf("usage: %s [-c FILE] [-o key=value]...\n", prog);
			exit(0);
		case 'V':
			printf("%s %s\n", prog, WARREN_VERSION);
			exit(0);
		case ':':
			fprintf(stderr, "%s: option -%c needs a value\n", prog, optopt);
			goto usage;
		default:
			fprintf(stderr, "%s: unknown option -%c\n", prog, optopt);
			goto usage;
		}
	}
	if (optind == argc) {
		return 0;
	}
	fprintf(stderr, "%s: unexpected argument \"%s\"\n", prog, argv[optind]);
	return 2;
usage:
	fprintf(stderr, "usage: %s [-c FILE] [-o key=value]...\n", prog);
	return 2;
}
