/* config.h: the internal side of the configuration table: key ids and typed
 * getters for the library's own modules. The public side is in warren.h. */
#ifndef WARREN_CONFIG_H
#define WARREN_CONFIG_H

#include "warren.h"

/* One id per key, in the order of config_defs[]. */
typedef enum config_id {
	CFG_BROKER_URL,             /* string: comma-separated amqp:// URLs */
	CFG_BROKER_VHOST,           /* string: overrides the URL's vhost when set */
	CFG_BROKER_PASSWORD_FILE,   /* string: path; its first line replaces the URL's password */
	CFG_BROKER_HEARTBEAT,       /* duration, whole seconds 0..3600 (0 disables) */
	CFG_BROKER_TLS_CA,          /* string: PEM CA bundle for amqps:// */
	CFG_BROKER_TLS_CERT,        /* string: PEM client certificate */
	CFG_BROKER_TLS_KEY,         /* string: PEM client key */
	CFG_BROKER_TLS_VERIFY,      /* bool: check the broker's certificate and name */
	CFG_BROKER_CONNECT_TIMEOUT, /* duration */
	CFG_BROKER_RECONNECT_MIN,   /* duration: first back-off step */
	CFG_BROKER_RECONNECT_MAX,   /* duration: back-off ceiling */
	CFG_BROKER_CONSUMER_TIMEOUT, /* duration: the broker's delivery acknowledgement timeout */
	CFG_CLIENT_TIMEOUT,         /* duration: default call deadline */
	CFG_CLIENT_REPLY_MODE,      /* enum: direct | queue */
	CFG_CLIENT_MAX_IN_FLIGHT,   /* int: bound of the correlation table */
	CFG_CLIENT_RETRY_ATTEMPTS,  /* int: publishes of a request the broker did not take */
	CFG_CLIENT_RETRY_DELAY,     /* duration: first republish delay (doubles) */
	CFG_CLIENT_BLOCKED_TIMEOUT, /* duration: how long a call waits out a blocked connection */
	CFG_CLIENT_METRICS_LISTEN,  /* string: HOST:PORT of a caller's /metrics; empty: off */
	CFG_CLIENT_TRANSIENT,       /* string: method patterns whose requests are not persisted */
	CFG_CLIENT_BATCH_REPLIES,   /* bool: requests offer to take their replies batched */
	CFG_CLIENT_BATCH,           /* string: method patterns whose requests may go batched */
	CFG_CLIENT_RESEND,          /* string: method patterns whose calls are sent again after a loss */
	CFG_WORKER_SERVICE,         /* string: service name, [a-z0-9_-]+ */
	CFG_WORKER_THREADS,         /* int 1..1024 */
	CFG_WORKER_PREFETCH,        /* int 0..65535, 0: 128 or the threads if more */
	CFG_WORKER_GRACE,           /* duration: how long a stopping worker lets handlers finish */
	CFG_WORKER_RETRY_ATTEMPTS,  /* int: attempts of a request failing transiently */
	CFG_WORKER_RETRY_DELAY,     /* duration: first retry's delay (doubles) */
	CFG_WORKER_CRASH_LIMIT,     /* int: deliveries before crashed-worker dead-lettering */
	CFG_WORKER_BREAKER_THRESHOLD, /* int: consecutive transient failures opening the breaker */
	CFG_WORKER_BREAKER_PROBE,   /* duration: probe interval while open */
	CFG_WORKER_HANDLER_TIMEOUT, /* duration: a handler's time limit */
	CFG_WORKER_REPLY_CACHE_SIZE, /* int: replies a worker keeps for repeats; 0: off */
	CFG_WORKER_REPLY_CACHE_TTL,  /* duration: how long it keeps each */
	CFG_WORKER_REPLY_CACHE_BYTES, /* size: the bodies it keeps, in all */
	CFG_MESSAGE_MAX_SIZE,       /* size in bytes (accepts k/M suffixes) */
	CFG_LOG_LEVEL,              /* enum: error | warn | info | debug */
	CFG_SECURITY_SCHEME,        /* enum: none | mac | ed25519 */
	CFG_SECURITY_KEY_ID,        /* string: our key's id */
	CFG_SECURITY_KEY_FILE,      /* string: path of our secret key (hex) */
	CFG_SECURITY_KEYRING,       /* string: directory of peers' keys, ID.key */
	CFG_SECURITY_ALLOW,         /* string: "method=id+id,..." */
	CFG_SECURITY_WINDOW,        /* duration: how far a signature's time may be from now */
	CFG_SECURITY_REPLAY_CACHE,  /* int: signatures a worker remembers to refuse replays */
	CFG_SECURITY_ENCRYPT,       /* string: "method[=id],...": methods whose bodies are sealed */
	CFG_SECURITY_RETIRING_KEY_ID,   /* string: a service's former key id (ed25519) */
	CFG_SECURITY_RETIRING_KEY_FILE, /* string: its secret key, still opening bodies sealed to it */
	CFG_METRICS_LISTEN,         /* string: HOST:PORT of a worker's /metrics; empty: off */
	CFG__COUNT
} config_id;

typedef enum config_type {
	CONFIG_STRING,
	CONFIG_INT,
	CONFIG_BOOL,
	CONFIG_DURATION, /* text "250ms", "30s", "2m", "1h", or a bare number of seconds ("1.5"); stored in ms */
	CONFIG_SIZE,     /* text "65536", "64k", "1M"; stored in bytes */
	CONFIG_ENUM,     /* one of enum_values; stored as its index */
} config_type;

/* One row of the table: everything the parser, -o, errors and warren.conf(5) need. */
struct config_def {
	const char *key;                 /* "section.name" */
	config_type type;
	int64_t min, max;                /* inclusive range of the stored number */
	const char *def;                 /* default, as text in the file's syntax */
	bool reload;                     /* SIGHUP applies it */
	const char *const *enum_values;  /* NULL-terminated, for CONFIG_ENUM */
	const char *desc;                /* one sentence for the man page */
};

extern const struct config_def config_defs[CFG__COUNT];

/* Typed getters; the id's type must match (asserted). */
const char *config_str(const warren_config *cfg, config_id id);
int64_t config_int(const warren_config *cfg, config_id id); /* INT, BOOL, DURATION (ms), SIZE, ENUM index */

/* The id of the library's key "section.name", or -1. */
int config_lookup(const char *key);

/* Keys of cfg, the library's (ids 0..CFG__COUNT-1) then those its program
 * added with warren_config_add_key, and the row of each. */
int config_count(const warren_config *cfg);
/* The id of key in cfg (the library's or its program's), or -1. */
int config_lookup_in(const warren_config *cfg, const char *key);
const struct config_def *config_def_at(const warren_config *cfg, int id);

/* The key that holds the password of the key spelled by the first len
 * bytes of key, whose value -o must then not carry one ("broker.url":
 * "broker.password_file"); NULL for any other key. */
const char *config_password_file(const warren_config *cfg, const char *key, size_t len);

/* A copy of cfg, the program's keys included; NULL when out of memory. */
warren_config *config_dup(const warren_config *src);

/* SIGHUP's step: copies from fresh (a config with the same keys, just
 * read) the value of every key its row marks reloadable, the program's
 * keys included. Lists in changed the reloadable keys whose value changed,
 * in ignored the others that changed and wait for a restart (each
 * comma-separated, "" when none). WARREN_ERR_NOMEM part way through. */
warren_err config_reload(warren_config *cfg, const warren_config *fresh, char *changed, size_t clen,
                         char *ignored, size_t ilen);

#endif
