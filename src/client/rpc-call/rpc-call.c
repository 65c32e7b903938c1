/* rpc-call: call a warren method from the command line. PARAMS are JSON; the
 * result is printed as JSON on stdout. Exit statuses from exitcodes.h
 * (rpc-call(1)): 0 OK, 1 the service answered an error, 2 usage,
 * 3 configuration, 4 unavailable or unroutable, 5 deadline exceeded,
 * 6 internal, 7 bad input. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "config.h"
#include "exitcodes.h"
#include "load.h"
#include "log.h"
#include "warren.h"

struct options {
	struct cli_config cc;
	int64_t timeout_ms;
	const char *message_id;
	bool json_wire;
	bool transient; /* -T: delivery_mode 1 */
	bool one_way;
	bool verbose;
	const char *method;
	const char *params; /* JSON text, "-" or "@FILE"; NULL: {} */
	bool batch;         /* -b: JSON lines of calls on stdin, results on stdout */
	int64_t count;      /* -n: load mode, this many calls; 0: one call */
	int in_flight;      /* -P: calls outstanding at once in load mode */
};

static void usage(FILE *to)
{
	fprintf(to, "usage: rpc-call [-c FILE] [-o key=value]... [-t SECONDS] [-m MESSAGE_ID]\n"
	            "                [-j] [-T] [-1] [-v] [-n COUNT [-P IN_FLIGHT]] METHOD [PARAMS "
	            "| - | @FILE]\n"
	            "       rpc-call [-c FILE] [-o key=value]... [-t SECONDS] [-j] [-T] [-v] -b\n"
	            "       rpc-call -h | -V\n");
}

static int fail(const char *method, const char *code, const char *msg, int status)
{
	fprintf(stderr, "rpc-call: %s: %s: %s\n", method, code, msg);
	return status;
}

static bool parse_seconds(const char *text, int64_t *ms)
{
	char *end = NULL;
	double s;

	errno = 0;
	s = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(s > 0) || s > 86400.0 || isnan(s)) {
		return false;
	}
	*ms = (int64_t)ceil(s * 1000.0);
	return true;
}

/* A whole number from min to max. */
static bool parse_count(const char *text, int64_t min, int64_t max, int64_t *out)
{
	char *end = NULL;
	long long v;

	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
		return false;
	}
	*out = v;
	return true;
}

/* The combinations of options that make no sense; EXITCODE_OK or EXITCODE_USAGE. */
static int check_load_options(const struct options *o)
{
	const char *why = NULL;

	if (o->in_flight > 0 && o->count == 0) {
		why = "-P needs -n";
	} else if (o->count > 0 && o->one_way) {
		why = "-n and -1 cannot be combined: load mode makes calls";
	} else if (o->count > 0 && o->message_id != NULL) {
		why = "-n and -m cannot be combined: every call needs its own message id";
	}
	if (why != NULL) {
		fprintf(stderr, "rpc-call: %s\n", why);
		return EXITCODE_USAGE;
	}
	return EXITCODE_OK;
}

static const struct option long_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"option", required_argument, NULL, 'o'},
    {"timeout", required_argument, NULL, 't'},
    {"message-id", required_argument, NULL, 'm'},
    {"json", no_argument, NULL, 'j'},
    {"transient", no_argument, NULL, 'T'},
    {"one-way", no_argument, NULL, '1'},
    {"verbose", no_argument, NULL, 'v'},
    {"batch", no_argument, NULL, 'b'},
    {"count", required_argument, NULL, 'n'},
    {"in-flight", required_argument, NULL, 'P'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"keys", no_argument, NULL, 'K'},
    {NULL, 0, NULL, 0},
};

/* The flag an option without a value sets; NULL for the other options. */
static bool *flag_of(struct options *o, int opt)
{
	switch (opt) {
	case 'j':
		return &o->json_wire;
	case 'T':
		return &o->transient;
	case '1':
		return &o->one_way;
	case 'v':
		return &o->verbose;
	case 'b':
		return &o->batch;
	default:
		return NULL;
	}
}

static int bad_value(const char *flag, const char *arg, const char *expected)
{
	fprintf(stderr, "rpc-call: %s \"%s\": expected %s\n", flag, arg, expected);
	return EXITCODE_USAGE;
}

/* -t SECONDS, -n COUNT or -P IN_FLIGHT: the value in range, or a usage error. */
static int take_number(struct options *o, int opt, const char *arg)
{
	int64_t n;

	switch (opt) {
	case 't':
		return parse_seconds(arg, &o->timeout_ms)
		           ? EXITCODE_OK
		           : bad_value("-t", arg, "a number of seconds from 0.001 to 86400");
	case 'n':
		return parse_count(arg, 1, 100000000, &o->count)
		           ? EXITCODE_OK
		           : bad_value("-n", arg, "a number of calls from 1 to 100000000");
	default: /* 'P' */
		if (!parse_count(arg, 1, 100000, &n)) {
			return bad_value("-P", arg, "a number of calls in flight from 1 to 100000");
		}
		o->in_flight = (int)n;
		return EXITCODE_OK;
	}
}

/* -K: every configuration key, for -o (and the shell's completion). */
static void print_keys(void)
{
	for (int i = 0; i < CFG__COUNT; i++) {
		printf("%s\n", config_defs[i].key);
	}
}

/* One option getopt_long returned; EXITCODE_OK to go on. */
static int take_option(struct options *o, int opt, char **argv)
{
	bool *flag = flag_of(o, opt);

	if (flag != NULL) {
		*flag = true;
		return EXITCODE_OK;
	}
	switch (opt) {
	case 'c':
	case 'o':
		return cli_take_config_option(&o->cc, "rpc-call", opt, optarg);
	case 't':
	case 'n':
	case 'P':
		return take_number(o, opt, optarg);
	case 'm':
		o->message_id = optarg;
		return EXITCODE_OK;
	case 'h':
		usage(stdout);
		exit(EXITCODE_OK);
	case 'V':
		printf("rpc-call %s\n", WARREN_VERSION);
		exit(EXITCODE_OK);
	case 'K':
		print_keys();
		exit(EXITCODE_OK);
	default:
		cli_option_error("rpc-call", opt, argv, long_options);
		usage(stderr);
		return EXITCODE_USAGE;
	}
}

/* After the options: nothing with -b, else METHOD and perhaps PARAMS. */
static int take_operands(int argc, char **argv, struct options *o)
{
	int left = argc - optind;

	if (o->batch) {
		if (left != 0 || o->count > 0 || o->one_way || o->message_id != NULL) {
			fprintf(stderr,
			        "rpc-call: -b takes its calls from standard input: no METHOD, "
			        "-n, -1 or -m\n");
			usage(stderr);
			return EXITCODE_USAGE;
		}
		return EXITCODE_OK;
	}
	if (left < 1 || left > 2) {
		fprintf(stderr, "rpc-call: %s\n",
		        left < 1 ? "missing METHOD" : "too many arguments");
		usage(stderr);
		return EXITCODE_USAGE;
	}
	o->method = argv[optind];
	o->params = left == 2 ? argv[optind + 1] : NULL;
	return check_load_options(o);
}

static int parse_args(int argc, char **argv, struct options *o)
{
	int opt;

	/* The leading ':' lets us word the errors ourselves. */
	while ((opt = getopt_long(argc, argv, ":c:o:t:m:jT1vbn:P:hVK", long_options, NULL)) != -1) {
		int status = take_option(o, opt, argv);

		if (status != EXITCODE_OK) {
			return status;
		}
	}
	return take_operands(argc, argv, o);
}

/* Reads all of f into a malloc'd, NUL-terminated buffer. */
static char *slurp(FILE *f, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);

	while (buf != NULL) {
		size_t got = fread(buf + n, 1, cap - n - 1, f);

		n += got;
		if (got == 0) {
			break;
		}
		if (cap - n - 1 == 0) {
			char *grown = realloc(buf, cap * 2);

			if (grown == NULL) {
				free(buf);
				return NULL;
			}
			buf = grown;
			cap *= 2;
		}
	}
	if (buf != NULL) {
		buf[n] = '\0';
		*len = n;
	}
	return buf;
}

static int read_params(const struct options *o, warren_value **out)
{
	const char *src = o->params;
	char *text = NULL, why[300];
	size_t len = 0;
	int status = EXITCODE_OK;

	*out = NULL;
	if (src == NULL) {
		return EXITCODE_OK;
	}
	if (strcmp(src, "-") == 0 || src[0] == '@') {
		FILE *f = strcmp(src, "-") == 0 ? stdin : fopen(src + 1, "re");

		if (f == NULL) {
			fprintf(stderr, "rpc-call: %s: %s\n", src + 1, strerror(errno));
			return EXITCODE_INPUT;
		}
		text = slurp(f, &len);
		if (f != stdin) {
			fclose(f);
		}
		src = text;
	} else {
		len = strlen(src);
	}
	if (src == NULL) {
		fprintf(stderr, "rpc-call: out of memory reading PARAMS\n");
		return EXITCODE_INTERNAL;
	}
	if (warren_value_from_json(src, len, out, why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, "rpc-call: PARAMS is not valid JSON: %s\n", why);
		status = EXITCODE_INPUT;
	}
	free(text);
	return status;
}

static int print_result(const struct options *o, const warren_reply *reply)
{
	char *json = NULL, why[200];

	if (warren_value_to_json(warren_reply_result(reply), &json, why, sizeof(why)) !=
	    WARREN_OK) {
		return fail(o->method, "INTERNAL", why, EXITCODE_INTERNAL);
	}
	printf("%s\n", json);
	free(json);
	return EXITCODE_OK;
}

/* One JSON line of batch output: {"method", "status", "result" | "message"}. */
static void batch_line(const char *method, const char *status, const warren_value *result,
                       const char *message)
{
	warren_value *out = warren_map();
	char *text = NULL;

	warren_map_set(out, "method", warren_str(method));
	warren_map_set(out, "status", warren_str(status));
	if (result != NULL) {
		warren_map_set(out, "result", warren_value_copy(result));
	} else {
		warren_map_set(out, "message", warren_str(message));
	}
	if (warren_value_to_json(out, &text, NULL, 0) == WARREN_OK) {
		printf("%s\n", text);
		fflush(stdout);
	}
	free(text);
	warren_value_free(out);
}

/* One line of -b: the call it names, and its line of output; the exit
 * status for it. */
static int batch_one(warren_client *client, const warren_call_opts *opts, const char *line,
                     size_t len, const char *label)
{
	warren_value *v = NULL;
	const char *method = NULL;
	size_t mlen;
	warren_reply *reply = NULL;
	warren_err err;
	char why[600];

	if (warren_value_from_json(line, len, &v, why, sizeof(why)) != WARREN_OK) {
		batch_line(label, "INVALID_ARGUMENT", NULL, why);
		return EXITCODE_INPUT;
	}
	if (!warren_value_get_str(warren_map_get(v, "method"), &method, &mlen)) {
		batch_line(label, "INVALID_ARGUMENT", NULL,
		           "expected {\"method\": \"SERVICE.NAME\", \"params\": ...}");
		warren_value_free(v);
		return EXITCODE_INPUT;
	}
	err = warren_call(client, method, warren_map_get(v, "params"), opts, &reply, why,
	                  sizeof(why));
	if (err == WARREN_OK) {
		batch_line(method, "OK", warren_reply_result(reply), NULL);
	} else if (reply != NULL) {
		batch_line(method, warren_status_name(warren_reply_status(reply)), NULL,
		           warren_reply_message(reply));
	} else {
		batch_line(method, warren_status_name(warren_err_status(err)), NULL, why);
	}
	warren_reply_free(reply);
	warren_value_free(v);
	return exitcode_for(err);
}

/* -b: one call per line of standard input, {"method": M, "params": P},
 * one line of result each on standard output, in order. Exits as the first
 * failure (a malformed line counts as bad input). */
static int batch(const struct options *o, warren_client *client)
{
	warren_call_opts opts = {
	    .timeout_ms = o->timeout_ms, .json = o->json_wire, .transient = o->transient};
	char *line = NULL, label[32];
	size_t cap = 0;
	ssize_t len;
	int status = EXITCODE_OK, lineno = 0;

	while ((len = getline(&line, &cap, stdin)) > 0) {
		int st;

		lineno++;
		if (len == 1 && line[0] == '\n') {
			continue;
		}
		snprintf(label, sizeof(label), "line %d", lineno);
		st = batch_one(client, &opts, line, (size_t)len, label);
		if (status == EXITCODE_OK) {
			status = st;
		}
	}
	free(line);
	return status;
}

/* -n: the calls, then the figures on stdout; exits as the first failure. */
static int load(const struct options *o, warren_client *client, const warren_value *params)
{
	warren_call_opts opts = {
	    .timeout_ms = o->timeout_ms, .json = o->json_wire, .transient = o->transient};
	int in_flight = o->in_flight > 0 ? o->in_flight : 1;
	struct load_result r;
	char why[300];
	warren_err err =
	    load_run(client, o->method, params, &opts, o->count, in_flight, &r, why, sizeof(why));

	if (err != WARREN_OK) {
		return fail(o->method, warren_status_name(warren_err_status(err)), why,
		            exitcode_for(err));
	}
	load_print(stdout, o->method, in_flight, &r);
	return exitcode_for(r.first_err);
}

static int call(const struct options *o, warren_client *client, const warren_value *params)
{
	warren_call_opts opts = {.timeout_ms = o->timeout_ms,
	                         .message_id = o->message_id,
	                         .json = o->json_wire,
	                         .transient = o->transient};
	warren_reply *reply = NULL;
	char why[600];
	warren_err err;
	int status;

	if (o->one_way) {
		err = warren_send(client, o->method, params, &opts, why, sizeof(why));
		return err == WARREN_OK
		           ? EXITCODE_OK
		           : fail(o->method, warren_status_name(warren_err_status(err)), why,
		                  exitcode_for(err));
	}
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	err = warren_call(client, o->method, params, &opts, &reply, why, sizeof(why));
	clock_gettime(CLOCK_MONOTONIC, &b);
	if (o->verbose) {
		fprintf(stderr, "rpc-call: %s: %s in %.2f ms%s%s%s\n", o->method,
		        reply != NULL ? warren_status_name(warren_reply_status(reply))
		                      : warren_status_name(warren_err_status(err)),
		        (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6,
		        reply != NULL ? " (correlation_id " : "",
		        reply != NULL ? warren_reply_correlation_id(reply) : "",
		        reply != NULL ? ")" : "");
	}
	if (err == WARREN_OK) {
		status = print_result(o, reply);
	} else if (err == WARREN_ERR_REMOTE) {
		status = fail(o->method, warren_status_name(warren_reply_status(reply)),
		              warren_reply_message(reply), EXITCODE_FAILED);
	} else {
		status = fail(o->method, warren_status_name(warren_err_status(err)), why,
		              exitcode_for(err));
	}
	warren_reply_free(reply);
	return status;
}

int main(int argc, char **argv)
{
	struct options o = {0};
	warren_config *cfg = NULL;
	warren_client *client = NULL;
	warren_value *params = NULL;
	char why[600];
	int status;

	log_set_program("rpc-call");
	status = parse_args(argc, argv, &o);
	if (status != EXITCODE_OK) {
		return status;
	}
	log_set_level(o.verbose ? LOG_DEBUG : LOG_ERROR);
	cfg = cli_build_config(&o.cc, "WARREN_URL", why, sizeof(why));
	if (cfg == NULL) {
		fprintf(stderr, "rpc-call: %s\n", why);
		return EXITCODE_CONFIG;
	}
	if (!o.batch) {
		status = read_params(&o, &params);
		if (status != EXITCODE_OK) {
			goto out;
		}
	}
	warren_err err = warren_client_new(cfg, "rpc-call", &client, why, sizeof(why));
	if (err != WARREN_OK) {
		status = fail(o.batch ? "-b" : o.method, warren_status_name(warren_err_status(err)),
		              why, exitcode_for(err));
		goto out;
	}
	status = o.batch       ? batch(&o, client)
	         : o.count > 0 ? load(&o, client, params)
	                       : call(&o, client, params);
out:
	warren_client_free(client);
	warren_value_free(params);
	warren_config_free(cfg);
	return status;
}
