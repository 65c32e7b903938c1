/* notify-user.c: the notification side of the user service, written only
 * against the public API (<warren/warren.h>) as an example for library
 * users: it asks user-service for a user (by id, by email, or every user
 * page by page) and "sends" a message the way the user's preferences say,
 * by printing what it would send.
 *
 *   notify-user [-c FILE] [-o key=value]... [-t SECONDS] -i ID | -e EMAIL | -a  MESSAGE
 *
 * Exit status, warren's table (enum warren_exit in warren.h): 0 sent (or skipped by the user's
 * preferences), 1 the service answered with an error (NOT_FOUND...),
 * 2 usage, 3 configuration, 4 the service is unavailable, 5 deadline
 * exceeded, 6 internal (out of memory, an undecodable reply, a system call),
 * 7 a request the library will not send (larger than message.max_size). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "warren.h"

#define PROG "notify-user"
#define USAGE                                                                                      \
	"usage: " PROG " [-c FILE] [-o key=value]... [-t SECONDS] -i ID | -e EMAIL | -a MESSAGE\n" \
	"       " PROG " -h | -V\n"

struct options {
	const char *id, *email, *message;
	bool all;
	int64_t timeout_ms; /* 0: client.timeout */
};

/* ------------------------------------------------------------ arguments */

static const struct option long_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"option", required_argument, NULL, 'o'},
    {"timeout", required_argument, NULL, 't'},
    {"id", required_argument, NULL, 'i'},
    {"email", required_argument, NULL, 'e'},
    {"all", no_argument, NULL, 'a'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* Whether the long option named by arg ("--name[=value]") has value val. */
static bool is_long_option(const char *arg, int val)
{
	size_t len = strcspn(arg + 2, "=");

	for (const struct option *l = long_options; l->name != NULL; l++) {
		if (l->val == val && strlen(l->name) == len &&
		    strncmp(l->name, arg + 2, len) == 0) {
			return true;
		}
	}
	return false;
}

/* getopt_long's ':' (no value) or '?' (unknown), arg the argument that
 * held the option: a long option by its name, a short one by its letter.
 * getopt_long says an unknown long option with optopt 0, an option without
 * its value is the last argument, and a long option given a value it does
 * not take has its own value in optopt. */
static void option_error(int opt, const char *arg)
{
	char letter[3] = {'-', (char)optopt, '\0'};
	bool dashes = strncmp(arg, "--", 2) == 0;
	int len = (int)strcspn(arg, "=");

	if (!(optopt == 0 || (dashes && (opt == ':' || is_long_option(arg, optopt))))) {
		arg = letter;
		len = 2;
	}
	fprintf(stderr, PROG ": %s %.*s%s\n" USAGE, opt == ':' ? "option" : "unknown option", len,
	        arg, opt == ':' ? " needs a value" : "");
}

/* -t SECONDS: a positive number of seconds, kept in ms. */
static int take_timeout(const char *arg, struct options *o)
{
	char *end;

	o->timeout_ms = (int64_t)(strtod(arg, &end) * 1000);
	if (*end != '\0' || end == arg || o->timeout_ms <= 0) {
		fprintf(stderr, PROG ": -t \"%s\": expected a number of seconds\n", arg);
		return WARREN_EXIT_USAGE;
	}
	return WARREN_EXIT_OK;
}

/* -c FILE or -o key=value, applied to cfg in the order given. */
static int take_config(int opt, const char *arg, warren_config *cfg)
{
	char why[512];
	warren_err err = opt == 'c' ? warren_config_load(cfg, arg, why, sizeof(why))
	                            : warren_config_set_arg(cfg, arg, why, sizeof(why));

	if (err != WARREN_OK) {
		fprintf(stderr, PROG ": %s\n", why);
		return WARREN_EXIT_CONFIG;
	}
	return WARREN_EXIT_OK;
}

/* One option getopt_long returned; WARREN_EXIT_OK to go on. */
static int take_option(int opt, char **argv, warren_config *cfg, struct options *o)
{
	switch (opt) {
	case 'c':
	case 'o':
		return take_config(opt, optarg, cfg);
	case 't':
		return take_timeout(optarg, o);
	case 'i':
		o->id = optarg;
		return WARREN_EXIT_OK;
	case 'e':
		o->email = optarg;
		return WARREN_EXIT_OK;
	case 'a':
		o->all = true;
		return WARREN_EXIT_OK;
	case 'h':
		printf(USAGE);
		exit(WARREN_EXIT_OK);
	case 'V':
		printf(PROG " %s\n", WARREN_VERSION);
		exit(WARREN_EXIT_OK);
	default:
		option_error(opt, argv[optind - 1]);
		return WARREN_EXIT_USAGE;
	}
}

/* After the options: exactly one selector, and the MESSAGE. */
static int take_operands(int argc, char **argv, struct options *o)
{
	if ((o->id != NULL) + (o->email != NULL) + o->all != 1) {
		fprintf(stderr, PROG ": give exactly one of -i ID, -e EMAIL and -a\n" USAGE);
		return WARREN_EXIT_USAGE;
	}
	if (optind != argc - 1 || argv[optind][0] == '\0') {
		fprintf(stderr, PROG ": give one MESSAGE to send\n" USAGE);
		return WARREN_EXIT_USAGE;
	}
	o->message = argv[optind];
	return WARREN_EXIT_OK;
}

static int parse_args(int argc, char **argv, warren_config *cfg, struct options *o)
{
	int opt;

	/* The leading ':' lets us word the errors ourselves. */
	while ((opt = getopt_long(argc, argv, ":c:o:t:i:e:ahV", long_options, NULL)) != -1) {
		int status = take_option(opt, argv, cfg, o);

		if (status != WARREN_EXIT_OK) {
			return status;
		}
	}
	return take_operands(argc, argv, o);
}

/* ------------------------------------------------------------ calls */

/* One blocking call. On success *result is the reply's result (owned by
 * *reply, which the caller frees); otherwise the failure is printed. */
static int call(warren_client *c, const struct options *o, const char *method,
                const warren_value *params, warren_reply **reply)
{
	warren_call_opts opts = {.timeout_ms = o->timeout_ms};
	char why[512] = "";
	warren_err err = warren_call(c, method, params, &opts, reply, why, sizeof(why));

	if (err == WARREN_ERR_REMOTE) {
		/* The service answered: its status and message say why. */
		fprintf(stderr, PROG ": %s: %s: %s\n", method,
		        warren_status_name(warren_reply_status(*reply)),
		        warren_reply_message(*reply));
	} else if (err != WARREN_OK) {
		/* No answer: the status a caller sees for the local error. */
		fprintf(stderr, PROG ": %s: %s: %s\n", method,
		        warren_status_name(warren_err_status(err)), why);
	}
	return warren_exit_for(err);
}

static const char *str_field(const warren_value *user, const char *name, const char *dflt)
{
	const char *s;
	size_t len;

	return warren_value_get_str(warren_map_get(user, name), &s, &len) ? s : dflt;
}

/* "Sends" message to one user as their preferences say: the channel
 * ("email" unless set) and whether they want messages at all. */
static void send_to(const warren_value *user, const char *message)
{
	const warren_value *prefs = warren_map_get(user, "preferences");
	const char *channel = str_field(prefs, "channel", "email");
	bool muted = false;
	int64_t id = 0;

	warren_value_get_int(warren_map_get(user, "id"), &id);
	if (warren_value_get_bool(warren_map_get(prefs, "muted"), &muted) && muted) {
		printf("skipped user %lld: notifications muted\n", (long long)id);
		return;
	}
	printf("sent to user %lld, %s <%s>, by %s: %s\n", (long long)id,
	       str_field(user, "name", "?"), str_field(user, "email", "?"), channel, message);
}

/* user.get by id or email, then send. */
static int notify_one(warren_client *c, const struct options *o)
{
	warren_value *params = warren_map();
	warren_reply *reply = NULL;
	char *end;
	int status;

	if (o->id != NULL) {
		long long id = strtoll(o->id, &end, 10);
		if (*end != '\0' || end == o->id) {
			fprintf(stderr, PROG ": -i \"%s\": expected a user id (a number)\n", o->id);
			warren_value_free(params);
			return WARREN_EXIT_USAGE;
		}
		warren_map_set(params, "id", warren_int(id));
	} else {
		warren_map_set(params, "email", warren_str(o->email));
	}
	status = call(c, o, "user.get", params, &reply);
	if (status == WARREN_EXIT_OK) {
		send_to(warren_reply_result(reply), o->message);
	}
	warren_reply_free(reply);
	warren_value_free(params);
	return status;
}

/* user.list page by page, following next_cursor until it is nil. */
static int notify_all(warren_client *c, const struct options *o)
{
	char cursor[64] = "";
	int status = WARREN_EXIT_OK;

	do {
		warren_value *params = warren_map();
		warren_reply *reply = NULL;
		const warren_value *page, *users;
		const char *next;
		size_t len;

		warren_map_set(params, "limit", warren_int(100));
		if (cursor[0] != '\0') {
			warren_map_set(params, "cursor", warren_str(cursor));
		}
		status = call(c, o, "user.list", params, &reply);
		warren_value_free(params);
		if (status != WARREN_EXIT_OK) {
			warren_reply_free(reply);
			break;
		}
		page = warren_reply_result(reply);
		users = warren_map_get(page, "users");
		for (size_t i = 0; i < warren_value_len(users); i++) {
			send_to(warren_array_at(users, i), o->message);
		}
		if (warren_value_get_str(warren_map_get(page, "next_cursor"), &next, &len)) {
			snprintf(cursor, sizeof(cursor), "%s", next);
		} else {
			cursor[0] = '\0';
		}
		warren_reply_free(reply);
	} while (cursor[0] != '\0');
	return status;
}

int main(int argc, char **argv)
{
	warren_config *cfg = warren_config_new();
	struct options o = {0};
	warren_client *c = NULL;
	const char *url = getenv("WARREN_URL");
	char why[512];
	warren_err err;
	int status;

	if (cfg == NULL) {
		fprintf(stderr, PROG ": out of memory\n");
		return WARREN_EXIT_INTERNAL;
	}
	/* Failures are reported on stderr by this program: the library's own
	 * log lines only for errors, unless -c or -o say otherwise. */
	warren_config_set(cfg, "log.level", "error", NULL, 0);
	/* WARREN_URL first, so that -c and -o can override it. */
	if (url != NULL &&
	    warren_config_set(cfg, "broker.url", url, why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, PROG ": WARREN_URL: %s\n", why);
		warren_config_free(cfg);
		return WARREN_EXIT_CONFIG;
	}
	status = parse_args(argc, argv, cfg, &o);
	if (status != WARREN_EXIT_OK) {
		warren_config_free(cfg);
		return status;
	}
	warren_log_configure(cfg, PROG);
	err = warren_client_new(cfg, PROG, &c, why, sizeof(why));
	if (err != WARREN_OK) {
		fprintf(stderr, PROG ": %s\n", why);
		warren_config_free(cfg);
		return warren_exit_for(err);
	}
	warren_config_free(cfg);
	status = o.all ? notify_all(c, &o) : notify_one(c, &o);
	warren_client_free(c);
	return status;
}
