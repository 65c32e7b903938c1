/* config.c: the one table of configuration keys (DESIGN.md section 5) and all
 * it drives: parsing and validating values, -o overrides, INI files read with
 * libinih, and the canonical text warren_config_get returns. */
#include "config.h"
#include "errstr.h"
#include "secret.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#define SEC  INT64_C(1000)
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define KIB  INT64_C(1024)
#define MIB  (1024 * KIB)
#define GIB  (1024 * MIB)

/* ------------------------------------------------------------------- table */

static const char *const reply_modes[] = {"direct", "queue", NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const schemes[] = {"none", "mac", "ed25519", NULL};

/* Designated indexes keep each row at its config_id whatever the order here;
 * a test checks that every id has a row. Columns: key, type, min, max,
 * default, reloadable, enum values, description. */
const struct config_def config_defs[CFG__COUNT] = {
    [CFG_BROKER_URL] = {"broker.url", CONFIG_STRING, 0, 0, "amqp://guest:guest@localhost:5672/",
                        false, NULL,
                        "Comma-separated list of amqp:// or amqps:// broker URLs, tried in turn "
                        "until one connects."},
    [CFG_BROKER_VHOST] = {"broker.vhost", CONFIG_STRING, 0, 0, "", false, NULL,
                          "Virtual host to use instead of the one in the URL; empty keeps the "
                          "URL's."},
    [CFG_BROKER_PASSWORD_FILE] = {"broker.password_file", CONFIG_STRING, 0, 0, "", false, NULL,
                                  "File whose first line replaces the password of the URL, so "
                                  "that no secret appears in a command line."},
    [CFG_BROKER_HEARTBEAT] = {"broker.heartbeat", CONFIG_DURATION, 0, 3600 * SEC, "30s", false,
                              NULL,
                              "AMQP heartbeat interval in whole seconds; 0 disables heartbeats."},
    [CFG_BROKER_TLS_CA] = {"broker.tls_ca", CONFIG_STRING, 0, 0, "", false, NULL,
                           "PEM file of the certificate authorities an amqps broker's "
                           "certificate must chain to; empty: the system's "
                           "(/etc/ssl/certs/ca-certificates.crt)."},
    [CFG_BROKER_TLS_CERT] = {"broker.tls_cert", CONFIG_STRING, 0, 0, "", false, NULL,
                             "PEM client certificate to present to an amqps broker; empty: "
                             "none."},
    [CFG_BROKER_TLS_KEY] = {"broker.tls_key", CONFIG_STRING, 0, 0, "", false, NULL,
                            "PEM private key of broker.tls_cert (mode 0600; a relative name is "
                            "a systemd credential)."},
    [CFG_BROKER_TLS_VERIFY] = {"broker.tls_verify", CONFIG_BOOL, 0, 1, "true", false, NULL,
                               "Whether an amqps broker's certificate and host name are "
                               "checked; turn off only to test."},
    [CFG_BROKER_CONNECT_TIMEOUT] = {"broker.connect_timeout", CONFIG_DURATION, 100, 10 * MIN, "5s",
                                    false, NULL,
                                    "How long one connection attempt, login included, may take."},
    [CFG_BROKER_RECONNECT_MIN] = {"broker.reconnect_min", CONFIG_DURATION, 10, MIN, "500ms", false,
                                  NULL,
                                  "First delay before reconnecting; it doubles after each failed "
                                  "attempt."},
    [CFG_BROKER_RECONNECT_MAX] = {"broker.reconnect_max", CONFIG_DURATION, 100, HOUR, "1s", false,
                                  NULL,
                                  "Longest delay between two reconnection attempts: at most "
                                  "this long after a broker comes back, its clients and "
                                  "workers are connected again."},
    [CFG_BROKER_CONSUMER_TIMEOUT] = {"broker.consumer_timeout", CONFIG_DURATION, SEC, 7 * 24 * HOUR,
                                     "30m", false, NULL,
                                     "The broker's delivery acknowledgement timeout "
                                     "(consumer_timeout in rabbitmq.conf); a worker refuses to "
                                     "start with a handler time limit that is not shorter."},
    [CFG_CLIENT_TIMEOUT] = {"client.timeout", CONFIG_DURATION, 1, 24 * HOUR, "30s", false, NULL,
                            "Deadline of a call that does not set its own."},
    [CFG_CLIENT_REPLY_MODE] = {"client.reply_mode", CONFIG_ENUM, 0, 1, "direct", false, reply_modes,
                               "How replies come back: direct uses RabbitMQ's direct reply-to, "
                               "queue a reply queue of its own per client, which outlives a "
                               "reconnect (it expires 5 minutes after its client is gone)."},
    [CFG_CLIENT_MAX_IN_FLIGHT] = {"client.max_in_flight", CONFIG_INT, 1, 10000000, "100000", false,
                                  NULL,
                                  "Most calls a client may have awaiting their replies; further "
                                  "calls fail at once."},
    [CFG_CLIENT_RETRY_ATTEMPTS] = {"client.retry_attempts", CONFIG_INT, 1, 20, "3", false, NULL,
                                   "Publishes a call's request gets when the broker does not take "
                                   "it (no queue bound yet, a nack), within the call's deadline; "
                                   "waiting for a lost connection uses up none. 1: no retry."},
    [CFG_CLIENT_RETRY_DELAY] = {"client.retry_delay", CONFIG_DURATION, 10, 10 * SEC, "100ms",
                                false, NULL,
                                "Delay before a call's request is published again; each further "
                                "retry waits twice as long, with random jitter up to the same "
                                "again."},
    [CFG_CLIENT_BLOCKED_TIMEOUT] = {"client.blocked_timeout", CONFIG_DURATION, 0, HOUR, "0",
                                    false, NULL,
                                    "How long a call waits while the broker refuses publishes "
                                    "(a memory or disk alarm) before it fails with UNAVAILABLE; "
                                    "0: the call's deadline decides."},
    [CFG_CLIENT_METRICS_LISTEN] = {"client.metrics_listen", CONFIG_STRING, 0, 0, "", false, NULL,
                                   "HOST:PORT on which a caller serves Prometheus metrics at "
                                   "/metrics over HTTP; empty: no metrics server."},
    [CFG_CLIENT_TRANSIENT] = {"client.transient", CONFIG_STRING, 0, 0, "", false, NULL,
                              "Methods whose requests are sent transient (delivery_mode 1), "
                              "comma-separated (a method may end in * or be *); empty: all "
                              "durable."},
    [CFG_CLIENT_BATCH_REPLIES] = {"client.batch_replies", CONFIG_BOOL, 0, 1, "true", false, NULL,
                                  "Whether requests offer to take their replies batched "
                                  "(rpc-accept-batch): a worker then sends the replies to one "
                                  "caller that are ready together as one message."},
    [CFG_CLIENT_BATCH] = {"client.batch", CONFIG_STRING, 0, 0, "*", false, NULL,
                          "Methods whose requests may travel batched (durable ones on "
                          "rpc.batch, transient ones on rpc.fast), comma-separated (a method may end in * or be "
                          "*); empty: every request alone."},
    [CFG_CLIENT_RESEND] = {"client.resend", CONFIG_STRING, 0, 0, "*", false, NULL,
                           "Methods whose calls are sent again (same message_id) when the "
                           "connection is lost after the broker confirmed them, "
                           "comma-separated (a method may end in * or be *); empty: none."},
    [CFG_WORKER_SERVICE] = {"worker.service", CONFIG_STRING, 0, 0, "", false, NULL,
                            "Name of the service a worker serves (a-z, 0-9, _ and -), the first "
                            "part of each of its methods."},
    [CFG_WORKER_THREADS] = {"worker.threads", CONFIG_INT, 1, 1024, "4", false, NULL,
                            "Number of handler threads of a worker."},
    [CFG_WORKER_PREFETCH] = {"worker.prefetch", CONFIG_INT, 0, 65535, "0", false, NULL,
                             "Most unacknowledged requests the broker hands a worker at once; 0 "
                             "means 128, or the number of threads if that is more."},
    [CFG_WORKER_GRACE] = {"worker.grace", CONFIG_DURATION, 0, HOUR, "10s", true, NULL,
                          "How long a stopping worker lets its handlers finish before it exits "
                          "and the broker requeues what is left."},
    [CFG_WORKER_RETRY_ATTEMPTS] = {"worker.retry_attempts", CONFIG_INT, 1, 100, "5", false, NULL,
                                   "Attempts a request gets when its handler fails with "
                                   "UNAVAILABLE or RESOURCE_EXHAUSTED; after the last it is "
                                   "dead-lettered. 1: no retry, the error is the answer."},
    [CFG_WORKER_RETRY_DELAY] = {"worker.retry_delay", CONFIG_DURATION, 250, 32000, "250ms",
                                false, NULL,
                                "Delay before the first retry; each further retry waits twice "
                                "as long, with random jitter up to the same again."},
    [CFG_WORKER_CRASH_LIMIT] = {"worker.crash_limit", CONFIG_INT, 0, 100, "3", false, NULL,
                                "Deliveries that ended with their worker dead (x-delivery-count "
                                "less the returns the worker caused) after which a request is "
                                "dead-lettered unexecuted; 0 leaves it to the broker's "
                                "delivery-limit."},
    [CFG_WORKER_BREAKER_THRESHOLD] = {"worker.breaker_threshold", CONFIG_INT, 0, 100000, "10",
                                      false, NULL,
                                      "Consecutive UNAVAILABLE or RESOURCE_EXHAUSTED failures "
                                      "after which a worker stops consuming until a probe "
                                      "succeeds; 0: never."},
    [CFG_WORKER_BREAKER_PROBE] = {"worker.breaker_probe", CONFIG_DURATION, 100, HOUR, "5s", false,
                                  NULL,
                                  "How often a worker whose breaker is open probes its "
                                  "dependency."},
    [CFG_WORKER_HANDLER_TIMEOUT] = {"worker.handler_timeout", CONFIG_DURATION, SEC, 7 * 24 * HOUR,
                                    "5m", false, NULL,
                                    "Time limit of a handler (a method may set its own): past it "
                                    "the request is answered DEADLINE_EXCEEDED, dead-lettered and "
                                    "acknowledged, whatever the handler still does."},
    [CFG_WORKER_REPLY_CACHE_SIZE] = {"worker.reply_cache_size", CONFIG_INT, 0, 1000000, "10000",
                                     false, NULL,
                                     "Most replies a worker process keeps, by caller and "
                                     "message_id, to answer a repeated request without running "
                                     "it again; the oldest goes first; 0: no reply cache."},
    [CFG_WORKER_REPLY_CACHE_TTL] = {"worker.reply_cache_ttl", CONFIG_DURATION, SEC, 7 * 24 * HOUR,
                                    "5m", false, NULL,
                                    "How long a worker keeps each reply of its reply cache."},
    [CFG_WORKER_REPLY_CACHE_BYTES] = {"worker.reply_cache_bytes", CONFIG_SIZE, 1, 64 * GIB, "64M",
                                      false, NULL,
                                      "Most bytes of reply bodies a worker's reply cache keeps in "
                                      "all (k, M and G suffixes allowed); the oldest go first, and "
                                      "a reply larger than this is not kept."},
    [CFG_MESSAGE_MAX_SIZE] = {"message.max_size", CONFIG_SIZE, 1, 128 * MIB, "1M", false, NULL,
                              "Largest message body sent or accepted, in bytes (k, M and G "
                              "suffixes allowed)."},
    [CFG_LOG_LEVEL] = {"log.level", CONFIG_ENUM, 0, 3, "info", true, log_levels,
                       "Least severe kind of message that is logged."},
    [CFG_SECURITY_SCHEME] = {"security.scheme", CONFIG_ENUM, 0, 2, "none", false, schemes,
                             "How messages are signed: none, mac (a secret shared per service) "
                             "or ed25519 (a key pair per caller and per service)."},
    [CFG_SECURITY_KEY_ID] = {"security.key_id", CONFIG_STRING, 0, 0, "", false, NULL,
                             "The id of this program's key, sent with each signature."},
    [CFG_SECURITY_KEY_FILE] = {"security.key_file", CONFIG_STRING, 0, 0, "", false, NULL,
                               "File holding this program's secret key in hex (mode 0600; a "
                               "relative name is a systemd credential)."},
    [CFG_SECURITY_KEYRING] = {"security.keyring", CONFIG_STRING, 0, 0, "", false, NULL,
                              "Directory of the keys this program accepts signatures from, one "
                              "file ID.key each: the shared secret (mac) or the public key "
                              "(ed25519), in hex."},
    [CFG_SECURITY_ALLOW] = {"security.allow", CONFIG_STRING, 0, 0, "", false, NULL,
                            "Which keys may call which methods, as METHOD=ID+ID entries "
                            "separated by commas (METHOD may end in * or be *); the first "
                            "matching entry decides; empty: any key of the keyring."},
    [CFG_SECURITY_WINDOW] = {"security.window", CONFIG_DURATION, SEC, 24 * HOUR, "5m", false,
                             NULL,
                             "How far from now a signature's time may be; a worker remembers "
                             "each request's signature this long to refuse replays."},
    [CFG_SECURITY_REPLAY_CACHE] = {"security.replay_cache", CONFIG_INT, 16, 16777216, "65536",
                                   false, NULL,
                                   "Most request signatures a worker process remembers within "
                                   "security.window; when it is full, requests signed before "
                                   "the oldest it had to forget are refused."},
    [CFG_SECURITY_ENCRYPT] = {"security.encrypt", CONFIG_STRING, 0, 0, "", false, NULL,
                              "Methods whose request and reply bodies are encrypted, as "
                              "METHOD=ID entries separated by commas (METHOD may end in * or "
                              "be *; ID: the service's key in security.keyring, optional with "
                              "mac)."},
    [CFG_SECURITY_RETIRING_KEY_ID] = {"security.retiring_key_id", CONFIG_STRING, 0, 0, "", false,
                                      NULL,
                                      "The id of a service's former key while it is replaced "
                                      "(ed25519): bodies encrypted to it still open."},
    [CFG_SECURITY_RETIRING_KEY_FILE] = {"security.retiring_key_file", CONFIG_STRING, 0, 0, "",
                                        false, NULL,
                                        "File holding that former secret key in hex (mode 0600; "
                                        "a relative name is a systemd credential); empty: none."},
    [CFG_METRICS_LISTEN] = {"metrics.listen", CONFIG_STRING, 0, 0, "", false, NULL,
                            "HOST:PORT on which a worker serves Prometheus metrics at "
                            "/metrics over HTTP; empty: no metrics server."},
};

/* Checks that a row's type cannot express. They live beside the table, not in
 * struct config_def, because every module includes that struct and none of
 * them needs these. Each sets errstr and returns false on failure. */
typedef bool (*config_check)(const struct config_def *d, const char *text, int64_t num,
                             char *errstr, size_t errlen);

static bool check_url_list(const struct config_def *d, const char *text, int64_t num, char *errstr,
                           size_t errlen);
static bool check_whole_seconds(const struct config_def *d, const char *text, int64_t num,
                                char *errstr, size_t errlen);
static bool check_service_name(const struct config_def *d, const char *text, int64_t num,
                               char *errstr, size_t errlen);
static bool check_listen(const struct config_def *d, const char *text, int64_t num, char *errstr,
                         size_t errlen);

static const config_check config_checks[CFG__COUNT] = {
    [CFG_BROKER_URL] = check_url_list,
    [CFG_BROKER_HEARTBEAT] = check_whole_seconds,
    [CFG_WORKER_SERVICE] = check_service_name,
    [CFG_METRICS_LISTEN] = check_listen,
    [CFG_CLIENT_METRICS_LISTEN] = check_listen,
};

/* Per key: the canonical text (what warren_config_get returns, and for
 * strings what config_str returns) and the number config_int returns. */
struct config_slot {
	char *text;  /* owned; never NULL once the config is built */
	int64_t num; /* ms, bytes, enum index, 0/1, or the integer; 0 for strings */
	bool given;  /* by a file or warren_config_set(_arg), not the default */
};

/* A key a program added (warren_config_add_key): its row, whose strings
 * it owns, and its value. Its id is CFG__COUNT + its index. */
struct config_extra {
	struct config_def def;
	char *password_file; /* owned; NULL: none */
	struct config_slot slot;
};

struct warren_config {
	struct config_slot slot[CFG__COUNT]; /* indexed by config_id */
	struct config_extra *extra;          /* the program's keys, in the order added */
	int nextra;
};

/* Where a key's -o value would put a password on the command line: the key
 * that holds it instead (a program's key names its own). */
static const char *const config_password_files[CFG__COUNT] = {
    [CFG_BROKER_URL] = "broker.password_file",
};

/* The sections of the library's keys, which a program's keys stay out of so
 * that a key the library adds later cannot collide with one of theirs. */
static const char *const library_sections[] = {
    "broker", "client", "worker", "message", "log", "security", "metrics", NULL,
};

static const struct config_def *def_of(const warren_config *cfg, int id)
{
	return id < CFG__COUNT ? &config_defs[id] : &cfg->extra[id - CFG__COUNT].def;
}

static struct config_slot *slot_of(warren_config *cfg, int id)
{
	return id < CFG__COUNT ? &cfg->slot[id] : &cfg->extra[id - CFG__COUNT].slot;
}

static const struct config_slot *cslot_of(const warren_config *cfg, int id)
{
	return id < CFG__COUNT ? &cfg->slot[id] : &cfg->extra[id - CFG__COUNT].slot;
}

/* ----------------------------------------------------------------- helpers */

/* A unit suffix and how many stored units (ms or bytes) it stands for. */
struct unit {
	const char *name;
	int64_t scale;
};

/* What the parsers accept; a bare number of seconds is a duration too. */
static const struct unit duration_units[] = {
    {"ms", 1}, {"s", SEC}, {"m", MIN}, {"h", HOUR}, {"", SEC}, {NULL, 0},
};
static const struct unit size_units[] = {
    {"", 1}, {"k", KIB}, {"K", KIB}, {"M", MIB}, {"G", GIB}, {NULL, 0},
};

/* How limits are printed: largest first, the last one dividing anything. */
static const struct unit duration_format[] = {{"h", HOUR}, {"m", MIN}, {"s", SEC}, {"ms", 1}};
static const struct unit size_format[] = {{"G", GIB}, {"M", MIB}, {"k", KIB}, {"", 1}};

static int64_t unit_scale(const struct unit *units, const char *name)
{
	for (const struct unit *u = units; u->name != NULL; u++) {
		if (strcmp(u->name, name) == 0) {
			return u->scale;
		}
	}
	return 0;
}

/* v in the largest unit that holds it exactly ("24h", "100ms", "128M"), so
 * that a range reads in the syntax the user writes. 0 is "0" in both. */
static const char *format_scaled(int64_t v, const struct unit *units, char *buf, size_t len)
{
	const struct unit *u = units;

	while (v != 0 && v % u->scale != 0) {
		u++;
	}
	snprintf(buf, len, "%" PRId64 "%s", v / u->scale, v == 0 ? "" : u->name);
	return buf;
}

/* Past this a number is out of every range; stopping there keeps the
 * arithmetic far from overflow. */
#define NUMBER_MAX INT64_C(1000000000000)

/* Reads decimal digits into *out, setting *huge instead of passing
 * NUMBER_MAX. Returns the first byte after them, or NULL when there is none. */
static const char *read_digits(const char *s, int64_t *out, bool *huge)
{
	const char *p = s;

	*out = 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (*out > NUMBER_MAX) {
			*huge = true;
		} else {
			*out = *out * 10 + (*p - '0');
		}
	}
	return p == s ? NULL : p;
}

/* Reads the digits after a decimal point as billionths into *out; digits
 * past the ninth may only be zeros (*exact is cleared otherwise). Returns the
 * first byte after them, or NULL when there is none. */
static const char *read_fraction(const char *s, int64_t *out, bool *exact)
{
	int64_t pow = 1000000000;
	const char *p = s;

	*out = 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (pow > 1) {
			pow /= 10;
			*out += (*p - '0') * pow;
		} else if (*p != '0') {
			*exact = false;
		}
	}
	return p == s ? NULL : p;
}

/* ------------------------------------------------------------------ values */

static bool out_of_range(const struct config_def *d, const char *text, char *errstr, size_t errlen)
{
	const struct unit *units = d->type == CONFIG_DURATION ? duration_format : size_format;
	char lo[32], hi[32];

	if (d->type == CONFIG_INT) {
		errstr_set(errstr, errlen, "%s: %s is out of range %" PRId64 "..%" PRId64, d->key, text,
		    d->min, d->max);
	} else {
		errstr_set(errstr, errlen, "%s: \"%s\" is out of range %s..%s", d->key, text,
		    format_scaled(d->min, units, lo, sizeof(lo)),
		    format_scaled(d->max, units, hi, sizeof(hi)));
	}
	return false;
}

/* Decimal only: "010" is ten, "0x10" is refused rather than read as sixteen. */
static bool parse_int(const struct config_def *d, const char *text, int64_t *num, char *errstr,
                      size_t errlen)
{
	const char *p = text + (text[0] == '-' || text[0] == '+');
	bool huge = false;
	int64_t v;

	p = read_digits(p, &v, &huge);
	if (p == NULL || *p != '\0') {
		errstr_set(errstr, errlen, "%s: \"%s\" is not an integer", d->key, text);
		return false;
	}
	*num = text[0] == '-' ? -v : v;
	if (huge || *num < d->min || *num > d->max) {
		return out_of_range(d, text, errstr, errlen);
	}
	return true;
}

/* A fraction is allowed with any unit ("1.5", "0.5m") as long as the total is
 * a whole number of milliseconds: nine fraction digits are finer than a
 * millisecond even of an hour. */
static bool parse_duration(const struct config_def *d, const char *text, int64_t *num, char *errstr,
                           size_t errlen)
{
	int64_t whole, frac = 0, scale = 0;
	bool huge = false, exact = true;
	const char *p = read_digits(text, &whole, &huge);

	if (p != NULL && *p == '.') {
		p = read_fraction(p + 1, &frac, &exact);
	}
	if (p != NULL) {
		scale = unit_scale(duration_units, p);
	}
	if (scale == 0) {
		errstr_set(errstr, errlen, "%s: \"%s\" is not a duration (e.g. 250ms, 30s, 2m)", d->key,
		    text);
		return false;
	}
	if (!exact || frac * scale % 1000000000 != 0) {
		errstr_set(errstr, errlen, "%s: \"%s\" must be a whole number of milliseconds", d->key,
		    text);
		return false;
	}
	if (huge || whole > d->max / scale) {
		return out_of_range(d, text, errstr, errlen);
	}
	*num = whole * scale + frac * scale / 1000000000;
	if (*num < d->min || *num > d->max) {
		return out_of_range(d, text, errstr, errlen);
	}
	return true;
}

/* Whole numbers with an optional binary suffix: 64k is 65536 bytes. */
static bool parse_size(const struct config_def *d, const char *text, int64_t *num, char *errstr,
                       size_t errlen)
{
	bool huge = false;
	int64_t v, scale = 0;
	const char *p = read_digits(text, &v, &huge);

	if (p != NULL) {
		scale = unit_scale(size_units, p);
	}
	if (scale == 0) {
		errstr_set(errstr, errlen, "%s: \"%s\" is not a size (e.g. 65536, 64k, 1M)", d->key, text);
		return false;
	}
	if (huge || v > d->max / scale || v * scale < d->min) {
		return out_of_range(d, text, errstr, errlen);
	}
	*num = v * scale;
	return true;
}

static bool parse_bool(const struct config_def *d, const char *text, int64_t *num, char *errstr,
                       size_t errlen)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(text, yes[i]) == 0 || strcasecmp(text, no[i]) == 0) {
			*num = strcasecmp(text, yes[i]) == 0;
			return true;
		}
	}
	errstr_set(errstr, errlen, "%s: \"%s\" is not a boolean (true, false, yes, no, on, off, 1, 0)",
	    d->key, text);
	return false;
}

/* Case-sensitive: the names are printed back exactly as the table has them. */
static bool parse_enum(const struct config_def *d, const char *text, int64_t *num, char *errstr,
                       size_t errlen)
{
	char names[256] = "";

	for (int64_t i = 0; d->enum_values[i] != NULL; i++) {
		size_t used = strlen(names);

		if (strcmp(text, d->enum_values[i]) == 0) {
			*num = i;
			return true;
		}
		snprintf(names + used, sizeof(names) - used, "%s%s", i > 0 ? ", " : "",
		         d->enum_values[i]);
	}
	errstr_set(errstr, errlen, "%s: \"%s\" is not one of %s", d->key, text, names);
	return false;
}

/* The row's type-level syntax and range; config_checks adds the rest. */
static bool parse_value(const struct config_def *d, const char *text, int64_t *num, char *errstr,
                        size_t errlen)
{
	*num = 0;
	switch (d->type) {
	case CONFIG_STRING:
		return true;
	case CONFIG_INT:
		return parse_int(d, text, num, errstr, errlen);
	case CONFIG_BOOL:
		return parse_bool(d, text, num, errstr, errlen);
	case CONFIG_DURATION:
		return parse_duration(d, text, num, errstr, errlen);
	case CONFIG_SIZE:
		return parse_size(d, text, num, errstr, errlen);
	case CONFIG_ENUM:
		return parse_enum(d, text, num, errstr, errlen);
	}
	return false;
}

static bool has_prefix(const char *p, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && strncmp(p, prefix, n) == 0;
}

/* Elements are taken exactly as the engine splits them, at each ',' with no
 * trimming, so " amqp://b" is refused here rather than failing to connect. */
static bool check_url_list(const struct config_def *d, const char *text, int64_t num, char *errstr,
                           size_t errlen)
{
	const char *p = text;

	if (text[0] == '\0') {
		errstr_set(errstr, errlen, "%s: needs at least one amqp:// or amqps:// URL", d->key);
		return false;
	}
	for (;;) {
		size_t n = strcspn(p, ",");

		if (!has_prefix(p, n, "amqp://") && !has_prefix(p, n, "amqps://")) {
			char shown[512];

			errstr_set(errstr, errlen, "%s: \"%s\" is not an amqp:// or amqps:// URL",
			           d->key, secret_mask_url(p, n, shown, sizeof(shown)));
			return false;
		}
		if (p[n] == '\0') {
			return true;
		}
		p += n + 1;
	}
}

static bool check_whole_seconds(const struct config_def *d, const char *text, int64_t num,
                                char *errstr, size_t errlen)
{
	if (num % SEC != 0) {
		errstr_set(errstr, errlen, "%s: \"%s\" must be a whole number of seconds", d->key, text);
		return false;
	}
	return true;
}

/* The name becomes part of queue and exchange names, hence the narrow set.
 * Empty means unset: only a worker needs it, and it checks. */
static bool check_service_name(const struct config_def *d, const char *text, int64_t num,
                               char *errstr, size_t errlen)
{
	size_t n = strspn(text, "abcdefghijklmnopqrstuvwxyz0123456789_-");

	if (text[0] != '\0' && (text[n] != '\0' || n > 64)) {
		errstr_set(errstr, errlen,
		    "%s: \"%s\" may hold only a-z, 0-9, _ and - (1 to 64 characters)", d->key,
		    text);
		return false;
	}
	return true;
}

/* HOST:PORT, split at the last ':' so that a bracketed IPv6 address works;
 * whether HOST resolves is only known when the server starts. Empty: off. */
static bool check_listen(const struct config_def *d, const char *text, int64_t num, char *errstr,
                         size_t errlen)
{
	const char *colon = strrchr(text, ':');
	char *end;
	long port;

	if (text[0] == '\0') {
		return true;
	}
	if (colon == NULL || colon == text) {
		errstr_set(errstr, errlen, "%s: \"%s\" is not HOST:PORT", d->key, text);
		return false;
	}
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || errno != 0 || port < 1 ||
	    port > 65535) {
		errstr_set(errstr, errlen, "%s: \"%s\": the port must be 1 to 65535", d->key, text);
		return false;
	}
	return true;
}

/* What warren_config_get shows: a form that parses back to the same number. */
static char *canonical_text(const struct config_def *d, const char *text, int64_t num)
{
	char buf[32];

	switch (d->type) {
	case CONFIG_STRING:
		return strdup(text);
	case CONFIG_BOOL:
		return strdup(num ? "true" : "false");
	case CONFIG_ENUM:
		return strdup(d->enum_values[num]);
	case CONFIG_DURATION:
		snprintf(buf, sizeof(buf), "%" PRId64 "ms", num);
		return strdup(buf);
	case CONFIG_INT:
	case CONFIG_SIZE:
		break;
	}
	snprintf(buf, sizeof(buf), "%" PRId64, num);
	return strdup(buf);
}

/* ------------------------------------------------------------ set and get */

/* Validates text for id and stores it; on failure the old value stays. */
static warren_err set_id(warren_config *cfg, int id, const char *text, char *errstr, size_t errlen)
{
	const struct config_def *d = def_of(cfg, id);
	struct config_slot *slot = slot_of(cfg, id);
	int64_t num;
	char *canon;

	if (!parse_value(d, text, &num, errstr, errlen)) {
		return WARREN_ERR_CONFIG;
	}
	if (id < CFG__COUNT && config_checks[id] != NULL &&
	    !config_checks[id](d, text, num, errstr, errlen)) {
		return WARREN_ERR_CONFIG;
	}
	canon = canonical_text(d, text, num);
	if (canon == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	free(slot->text);
	slot->text = canon;
	slot->num = num;
	return WARREN_OK;
}

/* The id of the key spelled by the first len bytes of key, the library's
 * or (cfg not NULL) one cfg's program added, or -1. */
static int lookup_n(const warren_config *cfg, const char *key, size_t len)
{
	int n = CFG__COUNT + (cfg != NULL ? cfg->nextra : 0);

	for (int i = 0; i < n; i++) {
		const char *name = def_of(cfg, i)->key;

		if (strncmp(name, key, len) == 0 && name[len] == '\0') {
			return i;
		}
	}
	return -1;
}

int config_lookup(const char *key)
{
	return key == NULL ? -1 : lookup_n(NULL, key, strlen(key));
}

int config_lookup_in(const warren_config *cfg, const char *key)
{
	return cfg == NULL || key == NULL ? -1 : lookup_n(cfg, key, strlen(key));
}

int config_count(const warren_config *cfg)
{
	return CFG__COUNT + cfg->nextra;
}

const struct config_def *config_def_at(const warren_config *cfg, int id)
{
	return def_of(cfg, id);
}

const char *config_password_file(const warren_config *cfg, const char *key, size_t len)
{
	int id = lookup_n(cfg, key, len);

	if (id < 0) {
		return NULL;
	}
	return id < CFG__COUNT ? config_password_files[id]
	                       : cfg->extra[id - CFG__COUNT].password_file;
}

/* Appends key to the comma-separated list in buf (no blanks: the list
 * goes into a logfmt field as it is). */
static void list_key(char *buf, size_t cap, const char *key)
{
	size_t used = strlen(buf);

	snprintf(buf + used, cap - used, "%s%s", used > 0 ? "," : "", key);
}

/* Driven by the table's reloadable column, the program's keys included:
 * nothing here names a key. */
warren_err config_reload(warren_config *cfg, const warren_config *fresh, char *changed, size_t clen,
                         char *ignored, size_t ilen)
{
	changed[0] = ignored[0] = '\0';
	for (int i = 0; i < config_count(cfg); i++) {
		const struct config_def *d = def_of(cfg, i);
		struct config_slot *slot = slot_of(cfg, i);
		const struct config_slot *now = cslot_of(fresh, i);
		char *text;

		if (strcmp(slot->text, now->text) == 0) {
			continue;
		}
		if (!d->reload) {
			list_key(ignored, ilen, d->key);
			continue;
		}
		text = strdup(now->text);
		if (text == NULL) {
			return WARREN_ERR_NOMEM;
		}
		free(slot->text);
		slot->text = text;
		slot->num = now->num;
		slot->given = now->given;
		list_key(changed, clen, d->key);
	}
	return WARREN_OK;
}

const char *config_str(const warren_config *cfg, config_id id)
{
	assert((int)id >= 0 && id < CFG__COUNT && config_defs[id].type == CONFIG_STRING);
	return cfg->slot[id].text;
}

int64_t config_int(const warren_config *cfg, config_id id)
{
	assert((int)id >= 0 && id < CFG__COUNT && config_defs[id].type != CONFIG_STRING);
	return cfg->slot[id].num;
}

/* Frees what an added key's row owns (its value is the caller's). */
static void extra_free(struct config_extra *x)
{
	free((char *)x->def.key);
	free((char *)x->def.def);
	free((char *)x->def.desc);
	if (x->def.enum_values != NULL) {
		for (size_t i = 0; x->def.enum_values[i] != NULL; i++) {
			free((char *)x->def.enum_values[i]);
		}
		free((char **)x->def.enum_values);
	}
	free(x->password_file);
}

void warren_config_free(warren_config *cfg)
{
	if (cfg == NULL) {
		return;
	}
	for (int i = 0; i < CFG__COUNT; i++) {
		free(cfg->slot[i].text);
	}
	for (int i = 0; i < cfg->nextra; i++) {
		extra_free(&cfg->extra[i]);
		free(cfg->extra[i].slot.text);
	}
	free(cfg->extra);
	free(cfg);
}

/* Every default must pass its own row's validation; the assert says so for
 * a table edited wrongly, and the tests build a config on every run. */
warren_config *warren_config_new(void)
{
	warren_config *cfg = calloc(1, sizeof(*cfg));

	if (cfg == NULL) {
		return NULL;
	}
	for (int i = 0; i < CFG__COUNT; i++) {
		char why[256];
		warren_err err = set_id(cfg, (config_id)i, config_defs[i].def, why, sizeof(why));

		assert(err != WARREN_ERR_CONFIG);
		if (err != WARREN_OK) {
			warren_config_free(cfg);
			return NULL;
		}
	}
	return cfg;
}

/* A set that succeeded marks its key given; err is passed on. */
static warren_err given(warren_config *cfg, int id, warren_err err)
{
	if (err == WARREN_OK) {
		slot_of(cfg, id)->given = true;
	}
	return err;
}

warren_err warren_config_set(warren_config *cfg, const char *key, const char *value, char *errstr,
                             size_t errlen)
{
	int id;

	if (cfg == NULL || key == NULL || value == NULL) {
		errstr_set(errstr, errlen, "warren_config_set: config, key and value must not be NULL");
		return WARREN_ERR_INVALID;
	}
	id = lookup_n(cfg, key, strlen(key));
	if (id < 0) {
		errstr_set(errstr, errlen, "unknown key \"%s\"", key);
		return WARREN_ERR_CONFIG;
	}
	return given(cfg, id, set_id(cfg, id, value, errstr, errlen));
}

/* The value is everything after the first '=', so it may hold '=' itself. */
warren_err warren_config_set_arg(warren_config *cfg, const char *arg, char *errstr, size_t errlen)
{
	const char *eq;
	int id;

	if (cfg == NULL || arg == NULL) {
		errstr_set(errstr, errlen, "warren_config_set_arg: config and argument must not be NULL");
		return WARREN_ERR_INVALID;
	}
	eq = strchr(arg, '=');
	if (eq == NULL) {
		errstr_set(errstr, errlen, "-o \"%s\": expected key=value", arg);
		return WARREN_ERR_CONFIG;
	}
	id = lookup_n(cfg, arg, (size_t)(eq - arg));
	if (id < 0) {
		errstr_set(errstr, errlen, "unknown key \"%.*s\"", (int)(eq - arg), arg);
		return WARREN_ERR_CONFIG;
	}
	return given(cfg, id, set_id(cfg, id, eq + 1, errstr, errlen));
}

bool warren_config_is_set(const warren_config *cfg, const char *key)
{
	int id = cfg == NULL || key == NULL ? -1 : lookup_n(cfg, key, strlen(key));

	return id >= 0 && cslot_of(cfg, id)->given;
}

const char *warren_config_get(const warren_config *cfg, const char *key)
{
	int id = cfg == NULL || key == NULL ? -1 : lookup_n(cfg, key, strlen(key));

	return id < 0 ? NULL : cslot_of(cfg, id)->text;
}

warren_err warren_config_get_int(const warren_config *cfg, const char *key, int64_t *out)
{
	int id = cfg == NULL || key == NULL ? -1 : lookup_n(cfg, key, strlen(key));

	if (id < 0 || out == NULL || def_of(cfg, id)->type == CONFIG_STRING) {
		return WARREN_ERR_INVALID;
	}
	*out = cslot_of(cfg, id)->num;
	return WARREN_OK;
}

/* ------------------------------------------------------ a program's keys */

/* "section.name" of a-z, 0-9 and _, the section not the library's. */
static bool check_new_name(const warren_config *cfg, const char *name, char *errstr, size_t errlen)
{
	static const char allowed[] = "abcdefghijklmnopqrstuvwxyz0123456789_";
	size_t sec = strspn(name, allowed), rest;

	rest = name[sec] == '.' ? strspn(name + sec + 1, allowed) : 0;
	if (sec == 0 || rest == 0 || name[sec + 1 + rest] != '\0' || sec + 1 + rest > 64) {
		errstr_set(
		    errstr, errlen,
		    "key \"%s\": want section.name of a-z, 0-9 and _ (at most 64 characters)",
		    name);
		return false;
	}
	for (size_t i = 0; library_sections[i] != NULL; i++) {
		if (strlen(library_sections[i]) == sec &&
		    strncmp(name, library_sections[i], sec) == 0) {
			errstr_set(errstr, errlen,
			           "key \"%s\": [%s] is a section of the library's; put the "
			           "program's keys in a section of its own",
			           name, library_sections[i]);
			return false;
		}
	}
	if (lookup_n(cfg, name, strlen(name)) >= 0) {
		errstr_set(errstr, errlen, "key \"%s\" is already a key", name);
		return false;
	}
	return true;
}

static bool check_new_key(const warren_config *cfg, const warren_key *k, char *errstr,
                          size_t errlen)
{
	if (k->name == NULL || k->description == NULL) {
		errstr_set(errstr, errlen,
		           "warren_config_add_key: name and description must be set");
		return false;
	}
	if (!check_new_name(cfg, k->name, errstr, errlen)) {
		return false;
	}
	if ((unsigned)k->type > WARREN_KEY_ENUM) {
		errstr_set(errstr, errlen, "key \"%s\": unknown type %d", k->name, (int)k->type);
		return false;
	}
	if ((k->type == WARREN_KEY_ENUM) != (k->values != NULL && k->values[0] != NULL)) {
		errstr_set(errstr, errlen, "key \"%s\": an enum needs values, other types none",
		           k->name);
		return false;
	}
	if ((k->type == WARREN_KEY_INT || k->type == WARREN_KEY_DURATION ||
	     k->type == WARREN_KEY_SIZE) &&
	    k->min > k->max) {
		errstr_set(errstr, errlen, "key \"%s\": min %" PRId64 " is above max %" PRId64,
		           k->name, k->min, k->max);
		return false;
	}
	return true;
}

static char **copy_values(const char *const *values)
{
	size_t n = 0;
	char **copy;

	while (values[n] != NULL) {
		n++;
	}
	copy = calloc(n + 1, sizeof(*copy));
	for (size_t i = 0; copy != NULL && i < n; i++) {
		copy[i] = strdup(values[i]);
		if (copy[i] == NULL) {
			for (size_t j = 0; j < i; j++) {
				free(copy[j]);
			}
			free(copy);
			copy = NULL;
		}
	}
	return copy;
}

/* The row of k, its strings copied; false when out of memory (x freed). */
static bool extra_fill(struct config_extra *x, const warren_key *k)
{
	static const config_type types[] = {
	    [WARREN_KEY_STRING] = CONFIG_STRING, [WARREN_KEY_INT] = CONFIG_INT,
	    [WARREN_KEY_BOOL] = CONFIG_BOOL,     [WARREN_KEY_DURATION] = CONFIG_DURATION,
	    [WARREN_KEY_SIZE] = CONFIG_SIZE,     [WARREN_KEY_ENUM] = CONFIG_ENUM,
	};
	bool ranged = k->type == WARREN_KEY_INT || k->type == WARREN_KEY_DURATION ||
	              k->type == WARREN_KEY_SIZE;
	int64_t nvalues = 0;

	memset(x, 0, sizeof(*x));
	while (k->type == WARREN_KEY_ENUM && k->values[nvalues] != NULL) {
		nvalues++;
	}
	x->def.type = types[k->type];
	x->def.min = ranged ? k->min : 0;
	x->def.max = ranged ? k->max : k->type == WARREN_KEY_BOOL ? 1 : nvalues - 1;
	x->def.reload = k->reloadable;
	x->def.key = strdup(k->name);
	x->def.def = strdup(k->def != NULL ? k->def : "");
	x->def.desc = strdup(k->description);
	x->def.enum_values =
	    k->type == WARREN_KEY_ENUM ? (const char *const *)copy_values(k->values) : NULL;
	x->password_file = k->password_file != NULL ? strdup(k->password_file) : NULL;
	if (x->def.key == NULL || x->def.def == NULL || x->def.desc == NULL ||
	    (k->type == WARREN_KEY_ENUM && x->def.enum_values == NULL) ||
	    (k->password_file != NULL && x->password_file == NULL)) {
		extra_free(x);
		return false;
	}
	return true;
}

warren_err warren_config_add_key(warren_config *cfg, const warren_key *key, char *errstr,
                                 size_t errlen)
{
	struct config_extra *grown;
	warren_err err;
	int id;

	if (cfg == NULL || key == NULL) {
		errstr_set(errstr, errlen,
		           "warren_config_add_key: config and key must not be NULL");
		return WARREN_ERR_INVALID;
	}
	if (!check_new_key(cfg, key, errstr, errlen)) {
		return WARREN_ERR_INVALID;
	}
	grown = realloc(cfg->extra, (size_t)(cfg->nextra + 1) * sizeof(*grown));
	if (grown == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	cfg->extra = grown;
	if (!extra_fill(&cfg->extra[cfg->nextra], key)) {
		errstr_set(errstr, errlen, "out of memory");
		return WARREN_ERR_NOMEM;
	}
	id = CFG__COUNT + cfg->nextra++;
	err = set_id(cfg, id, cfg->extra[id - CFG__COUNT].def.def, errstr, errlen);
	if (err != WARREN_OK) {
		/* A default its own row refuses: the key is not added. */
		extra_free(&cfg->extra[--cfg->nextra]);
		return err == WARREN_ERR_CONFIG ? WARREN_ERR_INVALID : err;
	}
	return WARREN_OK;
}

/* -------------------------------------------------------------- INI files */

/* One load: lines go through read_line to inih, pairs come back to on_pair,
 * which fills a scratch copy of the config. */
struct load {
	warren_config *scratch; /* replaces the caller's config only if all went well */
	FILE *f;
	char *line; /* getline's buffer */
	size_t cap;
	int lineno;     /* of the line last handed to inih; inih counts the same */
	int read_errno; /* from a failed read, 0 at a clean end of file */
	int bad_line;   /* the first line this file found bad, 0 when none */
	warren_err err; /* and its error */
	char why[512];  /* and its message */
};

static void load_reject(struct load *ld, warren_err err, const char *why)
{
	ld->bad_line = ld->lineno;
	ld->err = err;
	snprintf(ld->why, sizeof(ld->why), "%s", why);
}

/* inih's line reader, replaced for three reasons: it drops leading blanks, so
 * that an indented key is a key and never an inih continuation line; it
 * refuses a line longer than inih's buffer, which inih would cut or split;
 * and it stops the parse at the first line on_pair refused. */
static char *read_line(char *str, int num, void *stream)
{
	struct load *ld = stream;
	const char *start;
	size_t len;

	if (ld->bad_line != 0) {
		return NULL;
	}
	if (getline(&ld->line, &ld->cap, ld->f) < 0) {
		ld->read_errno = ferror(ld->f) ? errno : 0;
		return NULL;
	}
	ld->lineno++;
	start = ld->line + strspn(ld->line, " \t");
	len = strcspn(start, "\n");
	if (len + 2 > (size_t)num) {
		char why[64];

		snprintf(why, sizeof(why), "line is longer than %d characters", num - 2);
		load_reject(ld, WARREN_ERR_CONFIG, why);
		return NULL;
	}
	memcpy(str, start, len);
	memcpy(str + len, "\n", 2);
	return str;
}

/* Values may be wrapped in double quotes, which are dropped: that is how a
 * file writes leading or trailing blanks, or makes an empty value visible.
 * There are no escapes inside, and inih has already cut an inline comment
 * (" ;" onwards) before this sees the value, quoted or not. */
static char *unquote(const char *value)
{
	size_t len = strlen(value);

	if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
		return strndup(value + 1, len - 2);
	}
	return strdup(value);
}

static int on_pair(void *user, const char *section, const char *name, const char *value)
{
	struct load *ld = user;
	char key[128], why[sizeof(ld->why)];
	char *text;
	warren_err err;

	if (section[0] == '\0') {
		snprintf(why, sizeof(why), "key \"%s\" is outside any [section]", name);
		load_reject(ld, WARREN_ERR_CONFIG, why);
		return 0;
	}
	if ((size_t)snprintf(key, sizeof(key), "%s.%s", section, name) >= sizeof(key)) {
		snprintf(why, sizeof(why), "unknown key \"%s.%s\"", section, name);
		load_reject(ld, WARREN_ERR_CONFIG, why);
		return 0;
	}
	text = unquote(value);
	err = text == NULL ? WARREN_ERR_NOMEM
	                   : warren_config_set(ld->scratch, key, text, why, sizeof(why));
	free(text);
	if (err != WARREN_OK) {
		load_reject(ld, err, err == WARREN_ERR_NOMEM ? "out of memory" : why);
		return 0;
	}
	return 1;
}

/* The program's keys of src, added to the empty cfg. */
static bool copy_extras(warren_config *cfg, const warren_config *src)
{
	if (src->nextra == 0) {
		return true;
	}
	cfg->extra = calloc((size_t)src->nextra, sizeof(*cfg->extra));
	if (cfg->extra == NULL) {
		return false;
	}
	for (int i = 0; i < src->nextra; i++) {
		const struct config_def *d = &src->extra[i].def;
		warren_key k = {
		    .name = d->key,
		    .type = WARREN_KEY_STRING,
		    .def = d->def,
		    .values = d->enum_values,
		    .description = d->desc,
		    .password_file = src->extra[i].password_file,
		};
		struct config_extra *x = &cfg->extra[i];

		/* The row is copied as is; extra_fill only for its strings. */
		k.type = d->type == CONFIG_ENUM ? WARREN_KEY_ENUM : WARREN_KEY_STRING;
		if (!extra_fill(x, &k)) {
			return false;
		}
		x->def.type = d->type;
		x->def.min = d->min;
		x->def.max = d->max;
		x->def.reload = d->reload;
		cfg->nextra++;
	}
	return true;
}

warren_config *config_dup(const warren_config *src)
{
	warren_config *cfg = calloc(1, sizeof(*cfg));

	if (cfg != NULL && !copy_extras(cfg, src)) {
		warren_config_free(cfg);
		return NULL;
	}
	for (int i = 0; cfg != NULL && i < config_count(src); i++) {
		struct config_slot *slot = slot_of(cfg, i);

		slot->num = cslot_of(src, i)->num;
		slot->given = cslot_of(src, i)->given;
		slot->text = strdup(cslot_of(src, i)->text);
		if (slot->text == NULL) {
			warren_config_free(cfg);
			cfg = NULL;
		}
	}
	return cfg;
}

/* inih reports the first line it found bad (a syntax error, or a pair we
 * refused) and on_pair recorded why it refused; the earlier of the two wins. */
static warren_err load_result(const struct load *ld, int rc, const char *path, char *errstr,
                              size_t errlen)
{
	if (rc == -2) {
		errstr_set(errstr, errlen, "%s: out of memory", path);
		return WARREN_ERR_NOMEM;
	}
	if (rc > 0 && (ld->bad_line == 0 || rc < ld->bad_line)) {
		errstr_set(errstr, errlen, "%s:%d: expected [section] or key = value", path, rc);
		return WARREN_ERR_CONFIG;
	}
	if (ld->bad_line != 0) {
		errstr_set(errstr, errlen, "%s:%d: %s", path, ld->bad_line, ld->why);
		return ld->err;
	}
	if (ld->read_errno != 0) {
		errstr_set(errstr, errlen, "%s: %s", path, strerror(ld->read_errno));
		return WARREN_ERR_CONFIG;
	}
	return WARREN_OK;
}

/* All or nothing: the file fills a copy, which replaces cfg only when every
 * line was good, so a bad file (say at SIGHUP) leaves the running values. */
warren_err warren_config_load(warren_config *cfg, const char *path, char *errstr, size_t errlen)
{
	struct load ld = {.err = WARREN_OK};
	warren_err err;

	if (cfg == NULL || path == NULL) {
		errstr_set(errstr, errlen, "warren_config_load: config and path must not be NULL");
		return WARREN_ERR_INVALID;
	}
	ld.f = fopen(path, "r");
	if (ld.f == NULL) {
		errstr_set(errstr, errlen, "%s: %s", path, strerror(errno));
		return WARREN_ERR_CONFIG;
	}
	ld.scratch = config_dup(cfg);
	if (ld.scratch == NULL) {
		errstr_set(errstr, errlen, "out of memory");
		err = WARREN_ERR_NOMEM;
		goto out;
	}
	err =
	    load_result(&ld, ini_parse_stream(read_line, &ld, on_pair, &ld), path, errstr, errlen);
	if (err == WARREN_OK) {
		struct warren_config old = *cfg;

		*cfg = *ld.scratch;
		*ld.scratch = old;
	}
out:
	warren_config_free(ld.scratch);
	free(ld.line);
	fclose(ld.f);
	return err;
}
