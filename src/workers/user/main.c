/* user-service: the User Service daemon. Serves the user.* methods from
 * PostgreSQL on a warren worker pool, in the foreground under systemd
 * (Type=notify, watchdog); SIGTERM drains, SIGHUP reloads. Written on the
 * public header alone: warren_daemon does the process, this file the
 * database. See user-service(8). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "keys.h"
#include "methods.h"
#include "store.h"
#include "warren.h"

#define PROG "user-service"

/* The connection string: from db.conninfo_file (a secret file, perhaps a
 * systemd credential) or db.conninfo; with neither given, "": libpq's
 * defaults (the PG* environment, PGSERVICE and the service file, the
 * local socket), as psql. One given empty is a mistake, not a wish for
 * the defaults. WARREN_EXIT_OK, or WARREN_EXIT_CONFIG after the reason on
 * stderr. */
static int read_conninfo(const warren_config *cfg, char *conninfo, size_t cap)
{
	const char *service = warren_config_get(cfg, "worker.service");
	char why[512];

	if (strcmp(service, "user") != 0) {
		fprintf(stderr, PROG ": worker.service: " PROG " serves \"user\", not \"%s\"\n",
		        service);
		return WARREN_EXIT_CONFIG;
	}
	if (warren_config_read_secret(cfg, "db.conninfo_file", conninfo, cap, why, sizeof(why)) !=
	    WARREN_OK) {
		fprintf(stderr, PROG ": %s\n", why);
		return WARREN_EXIT_CONFIG;
	}
	if (conninfo[0] == '\0') {
		snprintf(conninfo, cap, "%s", warren_config_get(cfg, "db.conninfo"));
	}
	for (const char *const *key =
	         (const char *const[]){"db.conninfo_file", "db.conninfo", NULL};
	     conninfo[0] == '\0' && *key != NULL; key++) {
		if (warren_config_is_set(cfg, *key)) {
			fprintf(stderr,
			        PROG ": %s is empty: leave it out to connect with libpq's defaults "
			             "(the PG* environment, the service file, the local socket)\n",
			        *key);
			return WARREN_EXIT_CONFIG;
		}
	}
	if (conninfo[0] == '\0') {
		warren_log(WARREN_LOG_INFO,
		           "no db.conninfo: connecting with libpq's defaults (the PG* "
		           "environment, the service file, the local socket)");
	}
	return WARREN_EXIT_OK;
}

/* The schema must be there before any request is taken; the database may
 * come up after us, so wait for it (SIGHUP reloads meanwhile, SIGTERM ends
 * the wait and the daemon then stops cleanly). A schema newer than this
 * program is not waited out: WARREN_EXIT_CONFIG. */
static int migrate(warren_daemon *d, const char *conninfo)
{
	char why[512];
	int rc;

	while ((rc = store_migrate(conninfo, why, sizeof(why))) != STORE_OK) {
		if (rc == STORE_PERMANENT) {
			fprintf(stderr, PROG ": %s\n", why);
			return WARREN_EXIT_CONFIG;
		}
		warren_log(WARREN_LOG_WARN, "%s; retrying in 2 s", why);
		warren_daemon_status(d, "waiting for the database: %s", why);
		if (warren_daemon_sleep(d, 2000)) {
			warren_log(WARREN_LOG_INFO, "stopped while waiting for the database");
			break;
		}
	}
	return WARREN_EXIT_OK;
}

static int add_keys(warren_daemon *d)
{
	char why[512];

	for (size_t i = 0; i < user_nkeys; i++) {
		if (warren_daemon_add_key(d, &user_keys[i], why, sizeof(why)) != WARREN_OK) {
			fprintf(stderr, PROG ": %s\n", why);
			return WARREN_EXIT_INTERNAL;
		}
	}
	return WARREN_EXIT_OK;
}

int main(int argc, char **argv)
{
	static char conninfo[4096]; /* the stores' threads read it until the end */
	warren_daemon *d = NULL;
	int status = warren_daemon_new(argc, argv, PROG, "user", &d);

	if (d == NULL) {
		return status;
	}
	warren_daemon_set_dependency(d, "the database");
	status = add_keys(d);
	if (status == WARREN_EXIT_OK) {
		status = warren_daemon_load(d);
	}
	if (status == WARREN_EXIT_OK) {
		status = read_conninfo(warren_daemon_config(d), conninfo, sizeof(conninfo));
	}
	if (status == WARREN_EXIT_OK) {
		status = migrate(d, conninfo);
	}
	if (status == WARREN_EXIT_OK &&
	    methods_register(warren_daemon_worker(d), conninfo) != WARREN_OK) {
		fprintf(stderr, PROG ": cannot register the user.* methods\n");
		status = WARREN_EXIT_INTERNAL;
	}
	if (status != WARREN_EXIT_OK) {
		warren_daemon_free(d);
		return status;
	}
	return warren_daemon_run(d);
}
