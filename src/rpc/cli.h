/* cli.h: what every warren program does with -c FILE and -o key=value:
 * defaults, then the file, then the environment, then the overrides in order. */
#ifndef WARREN_CLI_H
#define WARREN_CLI_H

#include <getopt.h>

#include "warren.h"

#define CLI_MAX_OVERRIDES 64

struct cli_config {
	const char *file;                         /* -c, or NULL */
	const char *overrides[CLI_MAX_OVERRIDES]; /* -o, in order */
	int noverrides;
	bool done; /* -h or -V answered: nothing more to do */
};

/* Records one -o argument; false when there are too many. */
bool cli_add_override(struct cli_config *cc, const char *arg);

/* Takes -c FILE or -o key=value (opt 'c' or 'o', arg its value) into cc:
 * EXITCODE_OK (exitcodes.h), or EXITCODE_USAGE after "PROG: too many -o
 * options" on stderr. */
int cli_take_config_option(struct cli_config *cc, const char *prog, int opt, const char *arg);

/* The usage line of a worker daemon, a printf format taking the program. */
#define CLI_DAEMON_USAGE "usage: %s [-c FILE] [-o key=value]... [-h] [-V]\n"

/* The arguments of a worker daemon: -c/--config FILE, -o/--option
 * key=value (repeated), -h/--help, -V/--version. -h prints the usage and
 * -V "PROG VERSION" on stdout, set cc->done and return EXITCODE_OK
 * (exitcodes.h); EXITCODE_OK to go on; EXITCODE_USAGE after the error and
 * the usage on stderr. */
int cli_parse_daemon_args(int argc, char **argv, const char *prog, struct cli_config *cc);

/* Prints the error for getopt_long's answer opt (':' or '?', from an option
 * string starting with ':') on stderr: "PROG: unknown option -x" or "PROG:
 * option --name needs a value"; longs is the table getopt_long was given.
 * The caller prints its usage after it. */
void cli_option_error(const char *prog, int opt, char **argv, const struct option *longs);

/* Fills cfg (new, with any keys of the program already added): the file,
 * then broker.url from the environment variable url_env when set (NULL:
 * none), then the overrides in order. 0, or -1 with errstr on any bad
 * input (cfg then holds part of it: free it). */
int cli_fill_config(warren_config *cfg, const struct cli_config *cc, const char *url_env,
                    char *errstr, size_t errlen);

/* Builds the config. url_env names an environment variable that sets
 * broker.url when present (NULL: none). NULL with errstr on any bad input. */
warren_config *cli_build_config(const struct cli_config *cc, const char *url_env, char *errstr,
                                size_t errlen);

#endif
