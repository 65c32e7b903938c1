/* cli.c: the configuration steps shared by rpc-call, rpc-dlq and the worker
 * daemons, so that they all read -c and -o the same way. */
#include "cli.h"

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
