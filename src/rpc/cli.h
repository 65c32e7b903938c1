/* cli.h: what every warren program does with -c FILE and -o key=value:
 * defaults, then the file, then the environment, then the overrides in order. */
#ifndef WARREN_CLI_H
#define WARREN_CLI_H

#include "warren.h"

#define CLI_MAX_OVERRIDES 64

struct cli_config {
	const char *file;                         /* -c, or NULL */
	const char *overrides[CLI_MAX_OVERRIDES]; /* -o, in order */
	int noverrides;
};

/* Records one -o argument; false when there are too many. */
bool cli_add_override(struct cli_config *cc, const char *arg);

/* The arguments of a worker daemon: [-c FILE] [-o key=value]... [-h] [-V].
 * -h and -V print and exit 0. 0 to go on; 2 (usage) after a message. */
int cli_parse_daemon_args(int argc, char **argv, const char *prog, struct cli_config *cc);

/* Builds the config. url_env names an environment variable that sets
 * broker.url when present (NULL: none). NULL with errstr on any bad input. */
warren_config *cli_build_config(const struct cli_config *cc, const char *url_env, char *errstr,
                                size_t errlen);

#endif
