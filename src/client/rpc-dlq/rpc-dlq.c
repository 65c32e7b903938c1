/* rpc-dlq: the operator's tool for a service's dead letters (rpc-dlq(1)):
 * list, show, replay, purge, export and import what rpc.SERVICE.dlq holds.
 * A command walks the whole queue with basic.get, holding every dead letter
 * unacked; it then acts on the matching ones, oldest first, and gives back
 * every one it did not replay (confirmed) or purge. Exit statuses from
 * exitcodes.h: 0 done, 1 some dead letters failed, 2 usage,
 * 3 configuration, 4 broker unavailable, 6 internal, 7 a bad import file,
 * 8 not found. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "dlq_json.h"
#include "dlq_letter.h"
#include "dlq_print.h"
#include "envelope.h"
#include "exitcodes.h"
#include "seal.h"
#include "security.h"
#include "syncconn.h"
#include "warren.h"
#include "wire.h"

#define MAX_LIMIT       1000000000

/* The options a command accepts, as bits. */
enum {
	ACCEPT_FILTER = 1 << 0, /* --method --reason --older-than --newer-than */
	ACCEPT_LIMIT = 1 << 1,  /* -n */
	ACCEPT_DRY_RUN = 1 << 2,
	ACCEPT_YES = 1 << 3,
};

/* Long options without a short form. */
enum { OPT_METHOD = 256, OPT_REASON, OPT_OLDER, OPT_NEWER, OPT_DRY_RUN };

struct session;
struct cand;

/* A command: what it keeps of each matching dead letter during the walk
 * (collect; NULL for import, which walks nothing), then what it does with
 * those kept, oldest first (act). */
struct command {
	const char *name;
	unsigned accepts;
	bool needs_id; /* show: CORRELATION_ID */
	bool asks;     /* purge: confirms on a terminal unless --yes */
	int (*collect)(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
	               struct cand *c, bool *keep);
	int (*act)(struct session *s);
};

struct options {
	struct cli_config cc;
	const struct command *cmd;
	const char *service;
	const char *correlation_id; /* show */
	struct dlq_filter filter;
	int64_t limit; /* -n; 0: every matching dead letter */
	bool dry_run, yes;
	unsigned given;            /* ACCEPT_* bits of the options given */
	const char *given_name[4]; /* the option that set each bit, for errors */
};

/* A dead letter taken from the queue: acked, or given back at the end. */
struct taken {
	uint64_t tag;
	bool acked;
};

/* A matching dead letter, kept until the walk is over. Each command fills
 * what it needs. */
struct cand {
	size_t taken;              /* its index in session.taken */
	int64_t time_ms;           /* for the order: when it died; 0 unknown */
	char *corr;                /* for the order among equal times */
	struct dlq_row row;        /* list, replay --dry-run */
	char *line;                /* export */
	struct syncconn_msg msg;   /* show, replay: the message itself */
	struct dlq_letter *letter; /* show, replay */
};

/* An import line, parsed before anything is published. */
struct import_line {
	json_t *json;
	size_t lineno;
};

struct session {
	const struct options *o;
	struct syncconn *sc;
	char queue[300];
	uint32_t bound;      /* ready messages when the walk began: it takes no more */
	struct taken *taken; /* every dead letter taken, in queue order */
	size_t ntaken, taken_cap;
	struct cand *cands; /* the matching ones; after the walk, oldest first */
	size_t ncands, cands_cap;
	int64_t now_ms;
	uint64_t done;   /* replayed, purged or imported */
	uint64_t failed; /* replays or imports the broker did not take */
	struct import_line *lines;
	size_t nlines;
	/* replay: the operator's key that signs each replay (NULL when
	 * security.scheme is none), and its id. */
	struct security *sec;
	const char *key_id;
};

static int collect_row(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                       struct cand *c, bool *keep);
static int collect_show(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                        struct cand *c, bool *keep);
static int collect_replay(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                          struct cand *c, bool *keep);
static int collect_tag(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                       struct cand *c, bool *keep);
static int collect_export(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                          struct cand *c, bool *keep);
static int act_list(struct session *s);
static int act_show(struct session *s);
static int act_replay(struct session *s);
static int act_purge(struct session *s);
static int act_export(struct session *s);
static int act_import(struct session *s);

static const struct command commands[] = {
    {"list", ACCEPT_FILTER | ACCEPT_LIMIT, false, false, collect_row, act_list},
    {"show", 0, true, false, collect_show, act_show},
    {"replay", ACCEPT_FILTER | ACCEPT_LIMIT | ACCEPT_DRY_RUN, false, false, collect_replay,
     act_replay},
    {"purge", ACCEPT_FILTER | ACCEPT_LIMIT | ACCEPT_YES, false, true, collect_tag, act_purge},
    {"export", ACCEPT_FILTER | ACCEPT_LIMIT, false, false, collect_export, act_export},
    {"import", 0, false, false, NULL, act_import},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/* ------------------------------------------------------------------- usage */

static const char usage_line[] =
    "usage: rpc-dlq [-c FILE] [-o key=value]... COMMAND SERVICE [OPTIONS] (rpc-dlq -h for more)";

static void help(void)
{
	printf("usage: rpc-dlq [-c FILE] [-o key=value]... COMMAND SERVICE [OPTIONS]\n"
	       "the dead letters in the queue rpc.SERVICE.dlq:\n"
	       "  list SERVICE [FILTERS] [-n COUNT]       one line each, oldest first\n"
	       "  show SERVICE CORRELATION_ID             properties, headers and body\n"
	       "  replay SERVICE [FILTERS] [-n COUNT] [--dry-run]\n"
	       "                                          publish again to exchange rpc\n"
	       "  purge SERVICE [FILTERS] [-n COUNT] [--yes]\n"
	       "                                          remove (asks unless --yes)\n"
	       "  export SERVICE [FILTERS] [-n COUNT]     JSON lines on standard output\n"
	       "  import SERVICE                          JSON lines from standard input\n"
	       "FILTERS: --method METHOD[*] --reason REASON[*] --older-than DURATION\n"
	       "         --newer-than DURATION (DURATION: 90s, 5m, 2h, 4d)\n");
}

static int usage_error(const char *fmt, ...) WARREN_PRINTF(1, 2);

/* The message, then the usage line; returns EXITCODE_USAGE. */
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "rpc-dlq: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s\n", usage_line);
	return EXITCODE_USAGE;
}

/* --------------------------------------------------------------- arguments */

static bool parse_limit(const char *text, int64_t *out)
{
	char *end = NULL;
	long long v;

	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v < 1 || v > MAX_LIMIT) {
		return false;
	}
	*out = v;
	return true;
}

static void given(struct options *o, unsigned bit, const char *name)
{
	o->given |= bit;
	for (int i = 0; i < 4; i++) {
		if (bit == 1u << i) {
			o->given_name[i] = name;
		}
	}
}

/* --method and --reason: a value, or a prefix ending in '*'. */
static int set_pattern(struct options *o, const char **dst, const char *name, const char *value)
{
	if (value[0] == '\0') {
		fprintf(stderr, "rpc-dlq: %s: expected a value, or a prefix ending in '*'\n", name);
		return EXITCODE_USAGE;
	}
	*dst = value;
	given(o, ACCEPT_FILTER, name);
	return EXITCODE_OK;
}

static int set_duration(struct options *o, int64_t *dst, const char *name, const char *value)
{
	if (!dlq_parse_duration(value, dst)) {
		fprintf(stderr,
		        "rpc-dlq: %s \"%s\": expected a duration such as 90s, 5m, 2h or 4d\n", name,
		        value);
		return EXITCODE_USAGE;
	}
	given(o, ACCEPT_FILTER, name);
	return EXITCODE_OK;
}

static const struct option long_options[] = {
    {"method", required_argument, NULL, OPT_METHOD},
    {"reason", required_argument, NULL, OPT_REASON},
    {"older-than", required_argument, NULL, OPT_OLDER},
    {"newer-than", required_argument, NULL, OPT_NEWER},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"yes", no_argument, NULL, 'y'},
    {"config", required_argument, NULL, 'c'},
    {"option", required_argument, NULL, 'o'},
    {"count", required_argument, NULL, 'n'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static int bad_option(int opt, char **argv)
{
	cli_option_error("rpc-dlq", opt, argv, long_options);
	fprintf(stderr, "%s\n", usage_line);
	return EXITCODE_USAGE;
}

/* One option; EXITCODE_OK to go on. */
static int take_option(struct options *o, int opt, char **argv)
{
	switch (opt) {
	case 'c':
	case 'o':
		return cli_take_config_option(&o->cc, "rpc-dlq", opt, optarg);
	case 'n':
		if (!parse_limit(optarg, &o->limit)) {
			fprintf(
			    stderr,
			    "rpc-dlq: -n \"%s\": expected a number of dead letters from 1 to %d\n",
			    optarg, MAX_LIMIT);
			return EXITCODE_USAGE;
		}
		given(o, ACCEPT_LIMIT, "-n");
		return EXITCODE_OK;
	case 'y':
		o->yes = true;
		given(o, ACCEPT_YES, "--yes");
		return EXITCODE_OK;
	case OPT_DRY_RUN:
		o->dry_run = true;
		given(o, ACCEPT_DRY_RUN, "--dry-run");
		return EXITCODE_OK;
	case OPT_METHOD:
		return set_pattern(o, &o->filter.method, "--method", optarg);
	case OPT_REASON:
		return set_pattern(o, &o->filter.reason, "--reason", optarg);
	case OPT_OLDER:
		return set_duration(o, &o->filter.older_than_ms, "--older-than", optarg);
	case OPT_NEWER:
		return set_duration(o, &o->filter.newer_than_ms, "--newer-than", optarg);
	case 'h':
		help();
		exit(EXITCODE_OK);
	case 'V':
		printf("rpc-dlq %s\n", WARREN_VERSION);
		exit(EXITCODE_OK);
	default:
		return bad_option(opt, argv);
	}
}

static bool valid_service(const char *s)
{
	return s[0] != '\0' && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == strlen(s);
}

/* The positional arguments: COMMAND SERVICE [CORRELATION_ID]. */
static int take_operands(struct options *o, int n, char **args)
{
	size_t want;

	if (n < 1) {
		return usage_error("missing COMMAND (list, show, replay, purge, export or import)");
	}
	for (size_t i = 0; i < NCOMMANDS && o->cmd == NULL; i++) {
		o->cmd = strcmp(args[0], commands[i].name) == 0 ? &commands[i] : NULL;
	}
	if (o->cmd == NULL) {
		return usage_error("unknown command \"%s\"", args[0]);
	}
	if (n < 2) {
		return usage_error("%s: missing SERVICE", o->cmd->name);
	}
	o->service = args[1];
	if (!valid_service(o->service)) {
		return usage_error("%s: \"%s\" is not a service name (a-z, 0-9, '_' and '-')",
		                   o->cmd->name, o->service);
	}
	want = o->cmd->needs_id ? 3 : 2;
	if ((size_t)n < want) {
		return usage_error("%s: missing CORRELATION_ID", o->cmd->name);
	}
	if ((size_t)n > want) {
		return usage_error("%s: unexpected argument \"%s\"", o->cmd->name, args[want]);
	}
	o->correlation_id = want == 3 ? args[2] : NULL;
	return EXITCODE_OK;
}

/* The options given that the command does not take. */
static int check_applicable(const struct options *o)
{
	for (int i = 0; i < 4; i++) {
		if ((o->given & (1u << i)) && !(o->cmd->accepts & (1u << i))) {
			return usage_error("%s does not take %s", o->cmd->name, o->given_name[i]);
		}
	}
	if (o->cmd->asks && !o->yes && !isatty(STDIN_FILENO)) {
		fprintf(stderr, "rpc-dlq: purge: standard input is not a terminal to confirm on: "
		                "give --yes to purge without asking\n");
		return EXITCODE_USAGE;
	}
	return EXITCODE_OK;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	int opt, status;

	/* The leading ':' lets us word the errors; options may follow the
	 * operands (GNU getopt permutes them). */
	while ((opt = getopt_long(argc, argv, ":c:o:n:yhV", long_options, NULL)) != -1) {
		status = take_option(o, opt, argv);
		if (status != EXITCODE_OK) {
			return status;
		}
	}
	status = take_operands(o, argc - optind, argv + optind);
	return status != EXITCODE_OK ? status : check_applicable(o);
}

/* ------------------------------------------------------------------ session */

static const char *letters(uint64_t n)
{
	return n == 1 ? "dead letter" : "dead letters";
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int out_of_memory(void)
{
	fprintf(stderr, "rpc-dlq: out of memory\n");
	return EXITCODE_INTERNAL;
}

/* The exit status of a broker failure, after saying what failed. */
static int broker_failed(warren_err err, const char *why)
{
	fprintf(stderr, "rpc-dlq: %s\n", why);
	switch (err) {
	case WARREN_ERR_CONFIG:
		return EXITCODE_CONFIG;
	case WARREN_ERR_NOMEM:
		return EXITCODE_INTERNAL;
	default:
		return EXITCODE_UNAVAILABLE;
	}
}

static int open_session(struct session *s, const warren_config *cfg)
{
	char why[1024];
	bool exists = false;
	warren_err err = syncconn_open(cfg, "rpc-dlq", &s->sc, why, sizeof(why));

	if (err != WARREN_OK) {
		return broker_failed(err, why);
	}
	err = syncconn_queue_count(s->sc, s->queue, &exists, &s->bound, why, sizeof(why));
	if (err != WARREN_OK) {
		return broker_failed(err, why);
	}
	if (!exists) {
		fprintf(stderr, "rpc-dlq: no queue %s: is \"%s\" a service?\n", s->queue,
		        s->o->service);
		return EXITCODE_NOT_FOUND;
	}
	return EXITCODE_OK;
}

static void cand_free(struct cand *c)
{
	free(c->corr);
	dlq_row_free(&c->row);
	free(c->line);
	syncconn_msg_free(&c->msg);
	free(c->letter);
	memset(c, 0, sizeof(*c));
}

static void session_free(struct session *s)
{
	syncconn_close(s->sc);
	security_free(s->sec);
	for (size_t i = 0; i < s->ncands; i++) {
		cand_free(&s->cands[i]);
	}
	free(s->cands);
	free(s->taken);
	for (size_t i = 0; i < s->nlines; i++) {
		json_decref(s->lines[i].json);
	}
	free(s->lines);
}

/* -------------------------------------------------------------------- walk */

static int keep_tag(struct session *s, uint64_t tag)
{
	if (s->ntaken == s->taken_cap) {
		size_t cap = s->taken_cap > 0 ? s->taken_cap * 2 : 256;
		struct taken *grown = realloc(s->taken, cap * sizeof(*grown));

		if (grown == NULL) {
			return out_of_memory();
		}
		s->taken = grown;
		s->taken_cap = cap;
	}
	s->taken[s->ntaken++] = (struct taken){.tag = tag};
	return EXITCODE_OK;
}

/* Takes c (its ownership too) into the session's list. */
static int keep_cand(struct session *s, struct cand *c, const struct dlq_letter *l)
{
	if (s->ncands == s->cands_cap) {
		size_t cap = s->cands_cap > 0 ? s->cands_cap * 2 : 64;
		struct cand *grown = realloc(s->cands, cap * sizeof(*grown));

		if (grown == NULL) {
			cand_free(c);
			return out_of_memory();
		}
		s->cands = grown;
		s->cands_cap = cap;
	}
	c->corr = strdup(l->correlation_id);
	if (c->corr == NULL) {
		cand_free(c);
		return out_of_memory();
	}
	s->cands[s->ncands++] = *c;
	return EXITCODE_OK;
}

/* Takes one dead letter and hands it to the command if it matches. */
static int take_one(struct session *s, bool *empty)
{
	struct syncconn_msg m;
	struct dlq_letter l;
	struct cand c = {0};
	bool keep = false;
	char why[1024];
	warren_err err = syncconn_get(s->sc, s->queue, &m, empty, why, sizeof(why));
	int status;

	if (err != WARREN_OK) {
		return broker_failed(err, why);
	}
	if (*empty) {
		return EXITCODE_OK;
	}
	status = keep_tag(s, m.delivery_tag);
	dlq_letter_read(&m.message.properties, m.routing_key, s->queue, &l);
	if (status == EXITCODE_OK && dlq_filter_match(&s->o->filter, &l, s->now_ms)) {
		c.taken = s->ntaken - 1;
		c.time_ms = l.time_ms;
		status = s->o->cmd->collect(s, &m, &l, &c, &keep);
		if (status == EXITCODE_OK && keep) {
			status = keep_cand(s, &c, &l);
		} else {
			cand_free(&c);
		}
	}
	syncconn_msg_free(&m);
	return status;
}

/* Takes every dead letter the queue had when the command began and keeps
 * the matching ones, holding them all unacked. The whole queue, even with
 * -n: the broker gives back the messages it is given back in an order of
 * its own, so "the first COUNT" means the COUNT oldest, by time of death. */
static int walk(struct session *s)
{
	int status = EXITCODE_OK;
	bool empty = false;

	s->now_ms = wall_ms();
	for (uint32_t i = 0; i < s->bound && !empty && status == EXITCODE_OK; i++) {
		status = take_one(s, &empty);
	}
	return status;
}

/* Oldest first; unknown times last; then by correlation id, then in the
 * order taken. */
static int by_age(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	int c;

	if ((x->time_ms == 0) != (y->time_ms == 0)) {
		return x->time_ms == 0 ? 1 : -1;
	}
	if (x->time_ms != y->time_ms) {
		return x->time_ms < y->time_ms ? -1 : 1;
	}
	c = strcmp(x->corr, y->corr);
	if (c != 0) {
		return c;
	}
	return x->taken < y->taken ? -1 : x->taken > y->taken;
}

/* Sorts the matching dead letters and keeps the first -n of them. */
static void select_oldest(struct session *s)
{
	if (s->ncands > 1) {
		qsort(s->cands, s->ncands, sizeof(*s->cands), by_age);
	}
	while (s->o->limit > 0 && s->ncands > (size_t)s->o->limit) {
		cand_free(&s->cands[--s->ncands]);
	}
}

/* Gives back, one by one, every dead letter not acked, and waits until
 * the broker has applied every ack and nack: until they are all ready in
 * the queue again, beside those it held that were not taken (or until
 * broker.connect_timeout passes: someone else may be taking them), then
 * until the channel closes cleanly. */
static int end_walk(struct session *s)
{
	char why[1024];
	bool exists = true;
	uint32_t back = 0;
	warren_err err = syncconn_queue_count(s->sc, s->queue, &exists, &back, why, sizeof(why));

	for (size_t i = 0; i < s->ntaken && err == WARREN_OK; i++) {
		if (!s->taken[i].acked) {
			err = syncconn_requeue(s->sc, s->taken[i].tag, why, sizeof(why));
			back++;
		}
	}
	if (err == WARREN_OK && exists && back > 0) {
		err = syncconn_await_count(s->sc, s->queue, back, why, sizeof(why));
		err = err == WARREN_ERR_TIMEOUT ? WARREN_OK : err;
	}
	if (err == WARREN_OK) {
		err = syncconn_finish(s->sc, why, sizeof(why));
	}
	return err == WARREN_OK ? EXITCODE_OK : broker_failed(err, why);
}

/* Acks the i-th dead letter taken. */
static int ack(struct session *s, size_t i)
{
	char why[1024];
	warren_err err = syncconn_ack(s->sc, s->taken[i].tag, why, sizeof(why));

	if (err != WARREN_OK) {
		return broker_failed(err, why);
	}
	s->taken[i].acked = true;
	return EXITCODE_OK;
}

/* Walks, acts, gives back. A failure of the broker ends the connection,
 * which gives back everything still held; a failure of some dead letters
 * (EXITCODE_FAILED), none found or no memory for one still ends the walk
 * cleanly. */
static int run_walk(struct session *s)
{
	int status = walk(s), end;

	if (status != EXITCODE_OK) {
		return status;
	}
	select_oldest(s);
	status = s->o->cmd->act(s);
	if (status != EXITCODE_OK && status != EXITCODE_FAILED && status != EXITCODE_NOT_FOUND &&
	    status != EXITCODE_INTERNAL) {
		return status;
	}
	end = end_walk(s);
	return end != EXITCODE_OK ? end : status;
}

/* --------------------------------------------------------------- list, show */

/* The width to fit the table in: $COLUMNS, else the terminal's; 0 for none. */
static size_t screen_width(void)
{
	const char *env = getenv("COLUMNS");
	struct winsize ws;

	if (env != NULL && atoi(env) > 0) {
		return (size_t)atoi(env);
	}
	if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
		return ws.ws_col;
	}
	return 0;
}

static int collect_row(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                       struct cand *c, bool *keep)
{
	*keep = true;
	return dlq_row_fill(&c->row, l, s->now_ms) ? EXITCODE_OK : out_of_memory();
}

static void print_rows(struct session *s)
{
	struct dlq_row *rows = malloc((s->ncands > 0 ? s->ncands : 1) * sizeof(*rows));

	if (rows == NULL) {
		out_of_memory();
		return;
	}
	for (size_t i = 0; i < s->ncands; i++) {
		rows[i] = s->cands[i].row;
	}
	dlq_print_table(stdout, rows, s->ncands, screen_width());
	free(rows);
}

static int act_list(struct session *s)
{
	print_rows(s);
	return EXITCODE_OK;
}

/* Keeps the message itself and what was read of it. */
static int keep_message(struct syncconn_msg *m, const struct dlq_letter *l, struct cand *c)
{
	c->letter = malloc(sizeof(*c->letter));
	if (c->letter == NULL) {
		return out_of_memory();
	}
	*c->letter = *l;
	c->msg = *m;
	memset(m, 0, sizeof(*m)); /* moved */
	return EXITCODE_OK;
}

static bool same_id(const amqp_basic_properties_t *p, const char *want)
{
	return (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) &&
	       p->correlation_id.len == strlen(want) &&
	       memcmp(p->correlation_id.bytes, want, p->correlation_id.len) == 0;
}

static int collect_show(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                        struct cand *c, bool *keep)
{
	*keep = same_id(&m->message.properties, s->o->correlation_id);
	return *keep ? keep_message(m, l, c) : EXITCODE_OK;
}

static int act_show(struct session *s)
{
	char id[256];

	for (size_t i = 0; i < s->ncands; i++) {
		if (i > 0) {
			putchar('\n');
		}
		dlq_print_letter(stdout, &s->cands[i].msg.message, s->cands[i].msg.routing_key,
		                 s->cands[i].letter);
	}
	if (s->ncands > 0) {
		return EXITCODE_OK;
	}
	dlq_printable(id, sizeof(id), s->o->correlation_id, strlen(s->o->correlation_id));
	fprintf(stderr, "rpc-dlq: no dead letter with correlation id \"%s\" in %s\n", id, s->queue);
	return EXITCODE_NOT_FOUND;
}

/* ------------------------------------------------------------------ replay */

static int collect_replay(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                          struct cand *c, bool *keep)
{
	if (s->o->dry_run) {
		return collect_row(s, m, l, c, keep);
	}
	*keep = true;
	return keep_message(m, l, c);
}

static void replay_failed(struct session *s, const struct dlq_letter *l, const char *why)
{
	fprintf(stderr, "rpc-dlq: %s %s: not replayed: %s; it stays in %s\n", l->method,
	        l->correlation_id, why, s->queue);
	s->failed++;
}

/* Why a dead letter cannot be replayed as this session would sign it
 * (into why), or false when it can. A sealed body is encrypted with a key
 * its caller shares with the service: rpc-dlq cannot encrypt it again for
 * the operator's key, and the service opens a body with the key shared
 * with its signer. A signed one sent unsigned would be refused by the
 * service as bad-signature. */
static bool replay_refused(const struct session *s, const amqp_basic_properties_t *p,
                           const struct dlq_letter *l, char *why, size_t cap)
{
	const amqp_field_value_t *signer = wire_header(p, "rpc-key-id");
	char id[SIGN_KEY_ID_MAX + 1];
	bool text;

	if ((p->_flags & AMQP_BASIC_CONTENT_ENCODING_FLAG) &&
	    p->content_encoding.len == strlen(SEAL_ENCODING) &&
	    memcmp(p->content_encoding.bytes, SEAL_ENCODING, p->content_encoding.len) == 0) {
		snprintf(why, cap,
		         "its body is encrypted (%s) between its caller and the service, and "
		         "rpc-dlq cannot encrypt it again%s%s%s",
		         SEAL_ENCODING, s->sec != NULL ? " for key \"" : "",
		         s->sec != NULL ? s->key_id : "", s->sec != NULL ? "\"" : "");
		return true;
	}
	if (s->sec != NULL || signer == NULL) {
		return false;
	}
	text = signer->kind == AMQP_FIELD_KIND_UTF8 || signer->kind == AMQP_FIELD_KIND_BYTES;
	dlq_printable(id, sizeof(id), text ? signer->value.bytes.bytes : "?",
	              text ? signer->value.bytes.len : 1);
	snprintf(why, cap,
	         "it is signed (key \"%s\") and rpc-dlq has no key to sign its replay: set "
	         "security.scheme, security.key_id and security.key_file to an operator key "
	         "the service's security.allow lets call %s",
	         id, l->method);
	return true;
}

/* Signs the replay r of message msg with the operator's key, as the worker
 * will check it: the properties as they will be sent (no reply_to, no
 * rpc-deadline, rpc-attempt 1), the method the routing key names when the
 * letter has no type. false with why when its properties cannot be read. */
static bool sign_replay(const struct session *s, const struct dlq_letter *l,
                        const amqp_message_t *msg, struct dlq_replay *r, struct signature *sig,
                        char *why, size_t cap)
{
	struct envelope_meta m;
	char bad[512];

	if (envelope_read(&r->props, &m, bad, sizeof(bad)) != WARREN_OK) {
		snprintf(why, cap, "it cannot be signed: %s", bad);
		return false;
	}
	if (m.method[0] == '\0') {
		snprintf(m.method, sizeof(m.method), "%s", l->route);
	}
	security_sign_message(s->sec, &r->props, &m, msg->body.bytes, msg->body.len, sig);
	dlq_replay_add_signature(r, sig->key_id, sig->signed_at_ms, sig->sig, sig->len);
	return true;
}

/* Publishes one dead letter again, signed by the operator's key when
 * rpc-dlq has one; acks it once the broker confirmed. */
static int replay_one(struct session *s, const struct cand *c)
{
	const struct dlq_letter *l = c->letter;
	const amqp_message_t *msg = &c->msg.message;
	enum syncconn_outcome outcome;
	struct signature sig;
	struct dlq_replay r;
	char why[1024], text[1200];
	warren_err err;

	if (l->route[0] == '\0') {
		replay_failed(s, l, "its method is unknown");
		return EXITCODE_OK;
	}
	if (replay_refused(s, &msg->properties, l, text, sizeof(text))) {
		replay_failed(s, l, text);
		return EXITCODE_OK;
	}
	if (!dlq_replay_props(&msg->properties, &r)) {
		return out_of_memory();
	}
	if (s->sec != NULL && !sign_replay(s, l, msg, &r, &sig, text, sizeof(text))) {
		dlq_replay_free(&r);
		replay_failed(s, l, text);
		return EXITCODE_OK;
	}
	err = syncconn_publish(s->sc, WIRE_EXCHANGE, l->route, &r.props, msg->body, &outcome, why,
	                       sizeof(why));
	dlq_replay_free(&r);
	if (err != WARREN_OK) {
		snprintf(text, sizeof(text), "replay of %s %s: %s", l->method, l->correlation_id,
		         why);
		return broker_failed(err, text);
	}
	if (outcome == SYNCCONN_CONFIRMED) {
		s->done++;
		return ack(s, c->taken);
	}
	if (outcome == SYNCCONN_RETURNED) {
		snprintf(text, sizeof(text), "no queue is bound for %s (%s)", l->method, why);
	} else {
		snprintf(text, sizeof(text), "the broker refused it (basic.nack)");
	}
	replay_failed(s, l, text);
	return EXITCODE_OK;
}

static int act_replay(struct session *s)
{
	int status = EXITCODE_OK;

	if (s->o->dry_run) {
		print_rows(s);
		printf("would replay %zu %s\n", s->ncands, letters(s->ncands));
		return EXITCODE_OK;
	}
	for (size_t i = 0; i < s->ncands && status == EXITCODE_OK; i++) {
		status = replay_one(s, &s->cands[i]);
	}
	/* Those replayed before a failure were replayed: say so. */
	printf("replayed %llu of %zu %s\n", (unsigned long long)s->done, s->ncands,
	       letters(s->ncands));
	return status != EXITCODE_OK ? status : s->failed > 0 ? EXITCODE_FAILED : EXITCODE_OK;
}

/* ------------------------------------------------------------------- purge */

static int collect_tag(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                       struct cand *c, bool *keep)
{
	*keep = true;
	return EXITCODE_OK;
}

/* true when the user typed yes. */
static bool confirmed(const struct session *s)
{
	char line[64];

	fprintf(stderr, "purge %zu %s from %s? Type yes to confirm: ", s->ncands,
	        letters(s->ncands), s->queue);
	fflush(stderr);
	if (fgets(line, sizeof(line), stdin) == NULL) {
		return false;
	}
	line[strcspn(line, "\r\n")] = '\0';
	return strcmp(line, "yes") == 0;
}

/* Asks (unless --yes), then acks them all, or none. */
static int act_purge(struct session *s)
{
	int status = EXITCODE_OK;

	if (s->ncands > 0 && !s->o->yes && !confirmed(s)) {
		fprintf(stderr, "rpc-dlq: purge: not confirmed: nothing was purged\n");
		return EXITCODE_FAILED;
	}
	for (size_t i = 0; i < s->ncands && status == EXITCODE_OK; i++) {
		status = ack(s, s->cands[i].taken);
	}
	if (status == EXITCODE_OK) {
		printf("purged %zu %s\n", s->ncands, letters(s->ncands));
	}
	return status;
}

/* ------------------------------------------------------------------ export */

static int collect_export(struct session *s, struct syncconn_msg *m, const struct dlq_letter *l,
                          struct cand *c, bool *keep)
{
	json_t *j = dlq_json_export(&m->message.properties, m->message.body);

	c->line = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	*keep = true;
	return c->line != NULL ? EXITCODE_OK : out_of_memory();
}

static int act_export(struct session *s)
{
	for (size_t i = 0; i < s->ncands; i++) {
		puts(s->cands[i].line);
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "rpc-dlq: standard output: %s\n", strerror(errno));
		return EXITCODE_FAILED;
	}
	return EXITCODE_OK;
}

/* ------------------------------------------------------------------ import */

/* Checks that a parsed line converts to a message. */
static int check_line(const json_t *j, char *why, size_t whylen)
{
	amqp_pool_t pool;
	amqp_basic_properties_t props;
	amqp_bytes_t body;
	int rc;

	init_amqp_pool(&pool, 4096);
	rc = dlq_json_import(j, &pool, &props, &body, why, whylen);
	empty_amqp_pool(&pool);
	return rc;
}

static bool blank(const char *line)
{
	return line[strspn(line, " \t\r\n")] == '\0';
}

static int add_line(struct session *s, json_t *j, size_t lineno)
{
	struct import_line *grown = realloc(s->lines, (s->nlines + 1) * sizeof(*grown));

	if (grown == NULL) {
		json_decref(j);
		return out_of_memory();
	}
	s->lines = grown;
	s->lines[s->nlines++] = (struct import_line){.json = j, .lineno = lineno};
	return EXITCODE_OK;
}

/* Reads and checks every line before anything is published, so that a bad
 * file imports nothing. */
static int read_lines(struct session *s, FILE *in)
{
	char *line = NULL, why[600];
	size_t cap = 0, lineno = 0;
	int status = EXITCODE_OK;
	ssize_t len;

	while (status == EXITCODE_OK && (len = getline(&line, &cap, in)) >= 0) {
		json_error_t jerr;
		json_t *j;

		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
			line[--len] = '\0';
		}
		if (blank(line)) {
			continue;
		}
		j = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
		if (j == NULL) {
			snprintf(why, sizeof(why), "not valid JSON: %s (column %d)", jerr.text,
			         jerr.column);
		}
		if (j == NULL || check_line(j, why, sizeof(why)) != 0) {
			json_decref(j);
			fprintf(stderr, "rpc-dlq: import: line %zu: %s; nothing was imported\n",
			        lineno, why);
			status = EXITCODE_INPUT;
			break;
		}
		status = add_line(s, j, lineno);
	}
	free(line);
	return status;
}

static int import_one(struct session *s, const struct import_line *in, amqp_pool_t *pool)
{
	amqp_basic_properties_t props;
	amqp_bytes_t body;
	enum syncconn_outcome outcome;
	char why[1024], text[1200];
	warren_err err;

	recycle_amqp_pool(pool);
	if (dlq_json_import(in->json, pool, &props, &body, why, sizeof(why)) != 0) {
		fprintf(stderr, "rpc-dlq: import: line %zu: %s\n", in->lineno, why);
		return EXITCODE_FAILED;
	}
	/* Straight to the queue through the default exchange: it lands in the
	 * DLQ named on the command line, whatever its routing key would reach. */
	err = syncconn_publish(s->sc, WIRE_DEFAULT_EXCHANGE, s->queue, &props, body, &outcome, why,
	                       sizeof(why));
	if (err != WARREN_OK) {
		snprintf(text, sizeof(text), "import: line %zu: %s", in->lineno, why);
		return broker_failed(err, text);
	}
	if (outcome == SYNCCONN_CONFIRMED) {
		s->done++;
	} else {
		fprintf(stderr, "rpc-dlq: import: line %zu: not imported: %s\n", in->lineno,
		        outcome == SYNCCONN_RETURNED ? why : "the broker refused it (basic.nack)");
		s->failed++;
	}
	return EXITCODE_OK;
}

static int act_import(struct session *s)
{
	amqp_pool_t pool;
	int status = EXITCODE_OK;
	char why[1024];

	init_amqp_pool(&pool, 4096);
	for (size_t i = 0; i < s->nlines && status == EXITCODE_OK; i++) {
		status = import_one(s, &s->lines[i], &pool);
	}
	empty_amqp_pool(&pool);
	if (status == EXITCODE_OK && syncconn_finish(s->sc, why, sizeof(why)) != WARREN_OK) {
		status = broker_failed(WARREN_ERR_TRANSPORT, why);
	}
	/* Those imported before a failure are in the queue: say so. */
	printf("imported %llu of %zu %s into %s\n", (unsigned long long)s->done, s->nlines,
	       letters(s->nlines), s->queue);
	return status != EXITCODE_OK ? status : s->failed > 0 ? EXITCODE_FAILED : EXITCODE_OK;
}

/* -------------------------------------------------------------------- main */

/* replay: the operator's key from the [security] keys, read as a caller
 * reads them (security.scheme, key_id, key_file, keyring). */
static int load_operator_key(struct session *s, const warren_config *cfg)
{
	char why[1024];

	if (security_load(cfg, &s->sec, why, sizeof(why)) != 0) {
		fprintf(stderr, "rpc-dlq: %s\n", why);
		return EXITCODE_CONFIG;
	}
	s->key_id = config_str(cfg, CFG_SECURITY_KEY_ID);
	return EXITCODE_OK;
}

int main(int argc, char **argv)
{
	struct options o = {.filter = DLQ_FILTER_NONE};
	struct session s = {.o = &o};
	warren_config *cfg = NULL;
	char why[1024];
	int status = parse_args(argc, argv, &o);

	if (status != EXITCODE_OK) {
		return status;
	}
	wire_dlq(s.queue, sizeof(s.queue), o.service);
	cfg = cli_build_config(&o.cc, "WARREN_URL", why, sizeof(why));
	if (cfg == NULL) {
		fprintf(stderr, "rpc-dlq: %s\n", why);
		return EXITCODE_CONFIG;
	}
	if (o.cmd->collect == NULL) {
		status = read_lines(&s, stdin);
	}
	if (status == EXITCODE_OK && o.cmd->act == act_replay && !o.dry_run) {
		status = load_operator_key(&s, cfg);
	}
	if (status == EXITCODE_OK) {
		status = open_session(&s, cfg);
	}
	if (status == EXITCODE_OK) {
		status = o.cmd->collect != NULL ? run_walk(&s) : o.cmd->act(&s);
	}
	session_free(&s);
	warren_config_free(cfg);
	return status;
}
