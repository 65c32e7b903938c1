/* it_daemon.c: user-service as systemd runs it: sd_notify readiness only
 * once consuming, STATUS lines, a watchdog fed only while the I/O thread and
 * the handler pool both move (a handler held on a PostgreSQL row lock stops
 * it), SIGHUP reloading the reloadable keys (and refusing a bad file), the
 * database connection string from a credentials directory, SIGTERM with
 * STOPPING=1, and the start-up errors an operator sees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testenv.h"
#include "warren.h"

static char dir[256];        /* this run's scratch directory */
static char sock_path[300];  /* the NOTIFY_SOCKET we listen on */
static int notify_fd = -1;
static pid_t daemon_pid;     /* the daemon of the running test, killed after it */
static char notes[65536];    /* every datagram received, one per line */

static int setup(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	snprintf(dir, sizeof(dir), "/tmp/it-daemon-%ld", (long)getpid());
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		return -1;
	}
	snprintf(sock_path, sizeof(sock_path), "%s/notify", dir);
	unlink(sock_path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (notify_fd < 0 || bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];

	close(notify_fd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------- helpers */

/* Starts user-service with args, the notify socket (and a watchdog of
 * watchdog_ms when > 0) in its environment and its stderr in DIR/stderr. */
static pid_t spawn_daemon(const char *const *args, int watchdog_ms, const char *creds)
{
	const char *bin = getenv("WARREN_BIN") != NULL ? getenv("WARREN_BIN") : "build/bin";
	char path[512], url[600], err_path[300];
	const char *argv[32] = {path, "-o", url};
	int n = 3;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/user-service", bin);
	snprintf(url, sizeof(url), "broker.url=%s", testenv_url());
	snprintf(err_path, sizeof(err_path), "%s/stderr", dir);
	for (int i = 0; args != NULL && args[i] != NULL && n < 31; i++) {
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	/* Forget what earlier daemons sent: their READY=1 is not this one's. */
	while (recv(notify_fd, err_path, sizeof(err_path), MSG_DONTWAIT) > 0) {
	}
	snprintf(err_path, sizeof(err_path), "%s/stderr", dir);
	notes[0] = '\0';
	pid = fork();
	if (pid == 0) {
		char pidbuf[32], usec[32];
		int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(fd, 2);
		setenv("NOTIFY_SOCKET", sock_path, 1);
		if (watchdog_ms > 0) {
			snprintf(pidbuf, sizeof(pidbuf), "%ld", (long)getpid());
			snprintf(usec, sizeof(usec), "%lld", (long long)watchdog_ms * 1000);
			setenv("WATCHDOG_PID", pidbuf, 1);
			setenv("WATCHDOG_USEC", usec, 1);
		}
		if (creds != NULL) {
			setenv("CREDENTIALS_DIRECTORY", creds, 1);
		}
		execv(path, (char *const *)argv);
		_exit(127);
	}
	daemon_pid = pid;
	return pid;
}

/* After each test: a daemon a failed assertion left running is killed, so
 * that it neither outlives the run nor serves the next test's calls. */
static int kill_daemon(void **state)
{
	if (daemon_pid > 0 && kill(daemon_pid, 0) == 0) {
		kill(daemon_pid, SIGKILL);
		waitpid(daemon_pid, NULL, 0);
	}
	daemon_pid = 0;
	return 0;
}

/* Receives datagrams for up to ms, appending them to notes; true as soon
 * as one holds the line want (NULL: just collect for ms). */
static bool await_note(const char *want, int ms)
{
	int64_t until = testenv_mono_ms() + ms;

	for (;;) {
		int64_t left = until - testenv_mono_ms();
		struct pollfd p = {.fd = notify_fd, .events = POLLIN};
		char buf[1024];
		ssize_t len;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
			return false;
		}
		len = recv(notify_fd, buf, sizeof(buf) - 1, 0);
		if (len <= 0) {
			continue;
		}
		buf[len] = '\0';
		strncat(notes, buf, sizeof(notes) - strlen(notes) - 2);
		strcat(notes, "\n");
		if (want == NULL) {
			continue;
		}
		for (char *line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
			if (strcmp(line, want) == 0) {
				return true;
			}
		}
	}
}

/* How many datagrams in ms hold the line want. */
static int count_notes(const char *want, int ms)
{
	char *p;
	int n = 0;

	notes[0] = '\0';
	await_note(NULL, ms);
	for (p = notes; (p = strstr(p, want)) != NULL; p += strlen(want)) {
		n++;
	}
	return n;
}

static char *read_stderr(void)
{
	static char text[65536];
	char path[300];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/stderr", dir);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	return text;
}

static void write_file(const char *name, const char *text)
{
	char path[300];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static const char *conninfo_arg(void)
{
	static char arg[1024];

	snprintf(arg, sizeof(arg), "db.conninfo=%s", testenv_db());
	return arg;
}

static warren_client *client(void)
{
	warren_config *cfg = testenv_config(NULL);
	warren_client *c = NULL;

	assert_int_equal(warren_client_new(cfg, "it_daemon", &c, NULL, 0), WARREN_OK);
	warren_config_free(cfg);
	return c;
}

/* Creates a user and returns its id. */
static int64_t create_user(warren_client *c, const char *tag)
{
	warren_reply *reply = NULL;
	warren_value *params = NULL;
	char json[256];
	int64_t id = 0;

	snprintf(json, sizeof(json), "{\"email\":\"%s-%ld@example.org\",\"name\":\"Someone\"}", tag,
	         (long)getpid());
	assert_int_equal(warren_value_from_json(json, strlen(json), &params, NULL, 0), WARREN_OK);
	assert_int_equal(warren_call(c, "user.create", params, NULL, &reply, NULL, 0), WARREN_OK);
	assert_true(warren_value_get_int(warren_map_get(warren_reply_result(reply), "id"), &id));
	warren_reply_free(reply);
	warren_value_free(params);
	return id;
}

/* Holds user id's row in an open transaction on db. */
static void hold_row(PGconn *db, int64_t id)
{
	char sql[128];
	PGresult *res = PQexec(db, "BEGIN");

	PQclear(res);
	snprintf(sql, sizeof(sql), "SELECT 1 FROM users WHERE id = %lld FOR UPDATE", (long long)id);
	res = PQexec(db, sql);
	assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
	PQclear(res);
}

/* ------------------------------------------------------------------ tests */

static void test_ready_is_sent_only_once_consuming_then_status(void **state)
{
	pid_t pid = spawn_daemon((const char *const[]){"-o", conninfo_arg(), NULL}, 0, NULL);
	struct raw *raw;

	assert_true(await_note("READY=1", 20000));
	raw = raw_connect();
	assert_true(raw_consumer_count(raw, "rpc.user") >= 1);
	raw_close(raw);
	assert_true(await_note(NULL, 300) || strstr(notes, "STATUS=consuming;") != NULL);
	assert_non_null(strstr(notes, "STATUS=consuming; "));
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);
	/* STOPPING=1 came before the exit. */
	await_note(NULL, 200);
	assert_non_null(strstr(notes, "STOPPING=1"));
}

struct done {
	atomic_int n;
	atomic_int status;
};

static void on_done(warren_err err, warren_reply *reply, const char *errmsg, void *arg)
{
	struct done *d = arg;

	atomic_store(&d->status, reply != NULL ? (int)warren_reply_status(reply) : -1);
	warren_reply_free(reply);
	atomic_fetch_add(&d->n, 1);
}

/* Creates a user (tag), holds its row on db and calls user.update on it
 * (name, 30 s) into d: the daemon's handler then waits for the row.
 * Returns the user's id. */
static int64_t update_held_row(warren_client *c, PGconn *db, const char *tag, const char *name,
                               struct done *d)
{
	warren_value *params = NULL;
	char json[256];
	int64_t id = create_user(c, tag);

	hold_row(db, id);
	snprintf(json, sizeof(json), "{\"id\":%lld,\"name\":\"%s\"}", (long long)id, name);
	assert_int_equal(warren_value_from_json(json, strlen(json), &params, NULL, 0), WARREN_OK);
	assert_int_equal(warren_call_async(c, "user.update", params,
	                                   &(warren_call_opts){.timeout_ms = 30000}, on_done, d,
	                                   NULL, 0),
	                 WARREN_OK);
	warren_value_free(params);
	usleep(500000); /* the handler is now waiting for the row */
	return id;
}

static void test_watchdog_stops_while_the_only_handler_is_stuck(void **state)
{
	pid_t pid = spawn_daemon(
	    (const char *const[]){"-o", conninfo_arg(), "-o", "worker.threads=1", NULL}, 400, NULL);
	warren_client *c = client();
	warren_value *params = NULL;
	struct done d = {0};
	char json[256];
	int64_t id = 0;
	PGconn *db = PQconnectdb(testenv_db());
	PGresult *res;

	assert_true(await_note("READY=1", 20000));
	/* Idle: the watchdog is fed (every 200 ms). */
	assert_true(count_notes("WATCHDOG=1", 1000) >= 3);

	id = create_user(c, "wd");
	/* Hold the row: the one handler blocks in its UPDATE. */
	assert_int_equal(PQstatus(db), CONNECTION_OK);
	hold_row(db, id);
	snprintf(json, sizeof(json), "{\"id\":%lld,\"name\":\"Held\"}", (long long)id);
	assert_int_equal(warren_value_from_json(json, strlen(json), &params, NULL, 0), WARREN_OK);
	assert_int_equal(warren_call_async(c, "user.update", params,
	                                   &(warren_call_opts){.timeout_ms = 20000}, on_done, &d,
	                                   NULL, 0),
	                 WARREN_OK);
	warren_value_free(params);
	count_notes("WATCHDOG=1", 500); /* what was already on its way */
	assert_int_equal(count_notes("WATCHDOG=1", 1500), 0);
	assert_int_equal(atomic_load(&d.n), 0);

	/* Let go: the call ends OK and the watchdog is fed again. */
	res = PQexec(db, "ROLLBACK");
	PQclear(res);
	for (int i = 0; i < 100 && atomic_load(&d.n) == 0; i++) {
		usleep(50000);
	}
	assert_int_equal(atomic_load(&d.n), 1);
	assert_int_equal(atomic_load(&d.status), WARREN_STATUS_OK);
	assert_true(count_notes("WATCHDOG=1", 1000) >= 2);

	PQfinish(db);
	warren_client_free(c);
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);
}

/* A daemon told to stop while its only handler is held on a row lock:
 * with signals SIGTERMs (1: the grace of 500 ms runs out; 2: the second
 * ends it at once) it exits 1 without answering, and the request goes back
 * to the queue: the next daemon answers it once the row is free. */
static void stop_while_held(int signals)
{
	const char *grace = signals == 1 ? "worker.grace=500ms" : "worker.grace=1h";
	pid_t pid = spawn_daemon((const char *const[]){"-o", conninfo_arg(), "-o", "worker.threads=1",
	                                               "-o", grace, NULL},
	                         0, NULL);
	warren_client *c = client();
	PGconn *db = PQconnectdb(testenv_db());
	struct done d = {0};
	char json[256];
	int64_t id, t0;
	int status = 0;
	PGresult *res;

	assert_true(await_note("READY=1", 20000));
	id = update_held_row(c, db, signals == 1 ? "grace" : "twice", "After the restart", &d);

	t0 = testenv_mono_ms();
	kill(pid, SIGTERM);
	if (signals == 2) {
		usleep(200000);
		assert_int_equal(kill(pid, 0), 0); /* still draining */
		kill(pid, SIGTERM);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	assert_true(testenv_mono_ms() - t0 < 5000);
	assert_int_equal(atomic_load(&d.n), 0); /* not answered by the stopped daemon */

	res = PQexec(db, "ROLLBACK");
	PQclear(res);
	pid = spawn_daemon((const char *const[]){"-o", conninfo_arg(), NULL}, 0, NULL);
	for (int i = 0; i < 400 && atomic_load(&d.n) == 0; i++) {
		usleep(50000);
	}
	assert_int_equal(atomic_load(&d.n), 1);
	assert_int_equal(atomic_load(&d.status), WARREN_STATUS_OK);
	snprintf(json, sizeof(json), "SELECT name FROM users WHERE id = %lld", (long long)id);
	res = PQexec(db, json);
	assert_string_equal(PQgetvalue(res, 0, 0), "After the restart");
	PQclear(res);
	PQfinish(db);
	warren_client_free(c);
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);
}

static void test_grace_expired_exits_1_and_the_request_is_answered_by_the_next_daemon(void **state)
{
	stop_while_held(1);
}

static void test_a_second_sigterm_exits_1_and_the_request_is_answered_by_the_next_daemon(
    void **state)
{
	stop_while_held(2);
}

/* A drain can outlast TimeoutStopSec= and WatchdogSec=: at SIGTERM the
 * daemon asks systemd for its grace and a margin (EXTEND_TIMEOUT_USEC),
 * and feeds the watchdog while it drains, so that systemd neither kills
 * it at the stop timeout nor as wedged while a handler finishes. A
 * SIGHUP meanwhile is served (it was dropped). */
static void test_a_draining_daemon_asks_for_its_grace_and_feeds_the_watchdog(void **state)
{
	pid_t pid = spawn_daemon((const char *const[]){"-o", conninfo_arg(), "-o", "worker.threads=2",
	                                               "-o", "worker.grace=20s", NULL},
	                         400, NULL);
	warren_client *c = client();
	PGconn *db = PQconnectdb(testenv_db());
	struct done d = {0};
	int status = 0;
	PGresult *res;

	assert_true(await_note("READY=1", 20000));
	update_held_row(c, db, "drain", "Drained", &d);

	kill(pid, SIGTERM);
	assert_true(await_note("EXTEND_TIMEOUT_USEC=25000000", 5000));
	assert_non_null(strstr(notes, "STOPPING=1"));
	/* Draining, one handler held, the other thread free: fed. */
	assert_true(count_notes("WATCHDOG=1", 1500) >= 3);
	kill(pid, SIGHUP);
	assert_true(await_note("RELOADING=1", 5000));
	assert_int_equal(kill(pid, 0), 0); /* still draining */

	res = PQexec(db, "ROLLBACK");
	PQclear(res);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(atomic_load(&d.n), 1);
	assert_int_equal(atomic_load(&d.status), WARREN_STATUS_OK);
	assert_non_null(strstr(read_stderr(), "configuration reloaded"));
	PQfinish(db);
	warren_client_free(c);
}

static void pg(const char *what)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "tests/lib/postgres.sh %s '%s'", what,
	         getenv("WARREN_TEST_PG_DIR"));
	assert_int_equal(system(cmd), 0);
}

/* A database that stays down: after worker.breaker_threshold failures in a
 * row the daemon stops consuming (and says so) instead of sending every
 * request through its retries into the dead-letter queue; when the probe
 * finds the database back it consumes again and every call is answered. */
static void test_a_database_that_stays_down_pauses_consuming_instead_of_dead_lettering(
    void **state)
{
	pid_t pid = spawn_daemon((const char *const[]){"-o", conninfo_arg(), "-o",
	                                               "worker.breaker_threshold=3", "-o",
	                                               "worker.breaker_probe=300ms", NULL},
	                         0, NULL);
	warren_client *c = client();
	struct raw *raw = raw_connect();
	struct done d = {0};
	warren_value *params = NULL;

	assert_true(await_note("READY=1", 20000));
	raw_purge(raw, "rpc.user.dlq");
	pg("stop");
	assert_int_equal(warren_value_from_json("{\"limit\":1}", 11, &params, NULL, 0), WARREN_OK);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(warren_call_async(c, "user.list", params,
		                                   &(warren_call_opts){.timeout_ms = 60000}, on_done, &d,
		                                   NULL, 0),
		                 WARREN_OK);
	}
	warren_value_free(params);
	for (int i = 0; i < 100 && strstr(notes, "STATUS=paused, the database keeps failing") == NULL;
	     i++) {
		await_note(NULL, 100);
	}
	assert_non_null(strstr(notes, "STATUS=paused, the database keeps failing (UNAVAILABLE: "
	                              "database unavailable: "));
	assert_int_equal(raw_consumer_count(raw, "rpc.user"), 0);
	usleep(1500000); /* several probes fail meanwhile */
	assert_int_equal(raw_queue_count(raw, "rpc.user.dlq"), 0);
	assert_int_equal(atomic_load(&d.n), 0);

	pg("resume");
	for (int i = 0; i < 400 && atomic_load(&d.n) < 10; i++) {
		usleep(50000);
	}
	assert_int_equal(atomic_load(&d.n), 10);
	assert_int_equal(atomic_load(&d.status), WARREN_STATUS_OK);
	assert_true(raw_consumer_count(raw, "rpc.user") >= 1);
	assert_int_equal(raw_queue_count(raw, "rpc.user.dlq"), 0);
	assert_non_null(strstr(read_stderr(), "msg=\"circuit breaker closed: the probe succeeded; "
	                                      "consuming again\""));
	raw_close(raw);
	warren_client_free(c);
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);
}

/* After the breaker test: the database is up whatever happened. */
static int database_up(void **state)
{
	char cmd[600];

	kill_daemon(state);
	snprintf(cmd, sizeof(cmd), "tests/lib/postgres.sh resume '%s' >/dev/null 2>&1",
	         getenv("WARREN_TEST_PG_DIR"));
	if (system(cmd) != 0) {
		/* Already running. */
	}
	return 0;
}

static void test_sighup_reloads_the_log_level_and_refuses_a_bad_file(void **state)
{
	char conf[300], text[1200];
	pid_t pid;

	snprintf(conf, sizeof(conf), "%s/user.conf", dir);
	snprintf(text, sizeof(text), "[db]\nconninfo = %s\n[log]\nlevel = error\n", testenv_db());
	write_file("user.conf", text);
	pid = spawn_daemon((const char *const[]){"-c", conf, NULL}, 0, NULL);
	assert_true(await_note("READY=1", 20000));
	/* At level error the info lines are not written. */
	assert_null(strstr(read_stderr(), "level=info"));

	snprintf(text, sizeof(text), "[db]\nconninfo = %s\n[log]\nlevel = info\n", testenv_db());
	write_file("user.conf", text);
	kill(pid, SIGHUP);
	assert_true(await_note("READY=1", 5000));
	assert_non_null(strstr(notes, "RELOADING=1"));
	assert_non_null(strstr(read_stderr(), "level=info"));
	assert_non_null(strstr(read_stderr(), "msg=\"configuration reloaded\""));

	write_file("user.conf", "[log]\nlevel = loud\n");
	kill(pid, SIGHUP);
	assert_true(await_note("READY=1", 5000));
	snprintf(text, sizeof(text),
	         "msg=\"reload refused, keeping the running configuration: %s:2: log.level: "
	         "\\\"loud\\\" is not one of error, warn, info, debug\"",
	         conf);
	assert_non_null(strstr(read_stderr(), text));
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);
}

static void test_the_connection_string_comes_from_the_credentials_directory(void **state)
{
	char creds[300], text[1100];
	pid_t pid;

	snprintf(creds, sizeof(creds), "%s/creds", dir);
	mkdir(creds, 0700);
	snprintf(text, sizeof(text), "%s\n", testenv_db());
	write_file("creds/db-conninfo", text);
	pid = spawn_daemon((const char *const[]){"-o", "db.conninfo_file=db-conninfo", NULL}, 0,
	                   creds);
	assert_true(await_note("READY=1", 20000));
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);
	/* The connection string is a secret: it is never logged. */
	assert_null(strstr(read_stderr(), testenv_db()));
}

/* Runs user-service to its exit; returns the status, stderr in *err. */
static int run_to_exit(const char *const *args, const char *creds, char **err)
{
	pid_t pid = spawn_daemon(args, 0, creds);
	int status = 0;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	*err = read_stderr();
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Neither db.conninfo nor db.conninfo_file: the daemon connects as psql
 * does, here with the PG* environment scripts/run-tests.sh exports (and
 * waits for the database when that environment names none that answers). */
static void test_with_no_conninfo_the_daemon_connects_as_libpq_does(void **state)
{
	const char *port = getenv("PGPORT");
	char saved[32];
	warren_client *c;
	pid_t pid;

	assert_non_null(getenv("PGHOST"));
	assert_non_null(port);
	snprintf(saved, sizeof(saved), "%s", port);
	setenv("PGPORT", "1", 1);
	pid = spawn_daemon((const char *const[]){NULL}, 0, NULL);
	setenv("PGPORT", saved, 1);
	for (int64_t end = testenv_mono_ms() + 10000;
	     strstr(notes, "STATUS=waiting for the database") == NULL && testenv_mono_ms() < end;) {
		await_note(NULL, 200);
	}
	assert_non_null(strstr(notes, "STATUS=waiting for the database"));
	assert_null(strstr(notes, "READY=1"));
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);

	pid = spawn_daemon((const char *const[]){NULL}, 0, NULL);
	assert_true(await_note("READY=1", 20000));
	c = client();
	assert_true(create_user(c, "libpq") > 0);
	warren_client_free(c);
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);
	assert_non_null(strstr(read_stderr(), "no db.conninfo: connecting with libpq's defaults"));
}

static void test_start_up_errors_are_clear_and_have_their_exit_status(void **state)
{
	char *err, want[600];

	assert_int_equal(run_to_exit((const char *const[]){"-o", "db.conninfo=", NULL}, NULL, &err),
	                 3);
	assert_string_equal(err, "user-service: db.conninfo is empty: leave it out to connect with "
	                         "libpq's defaults (the PG* environment, the service file, the "
	                         "local socket)\n");

	assert_int_equal(
	    run_to_exit((const char *const[]){"-o", "db.conninfo_file=nope", NULL}, dir, &err), 3);
	snprintf(want, sizeof(want),
	         "user-service: db.conninfo_file: %s/nope: No such file or directory\n", dir);
	assert_string_equal(err, want);

	assert_int_equal(run_to_exit((const char *const[]){"-o", "worker.service=billing", NULL},
	                             NULL, &err),
	                 3);
	assert_string_equal(err,
	                    "user-service: worker.service: user-service serves \"user\", not "
	                    "\"billing\"\n");

	assert_int_equal(
	    run_to_exit((const char *const[]){"-o", "worker.threads=0", NULL}, NULL, &err), 3);
	assert_string_equal(err, "user-service: worker.threads: 0 is out of range 1..1024\n");

	assert_int_equal(run_to_exit((const char *const[]){"extra", NULL}, NULL, &err), 2);
	assert_string_equal(err, "user-service: unexpected argument \"extra\"\n");

	assert_int_equal(run_to_exit((const char *const[]){"-x", NULL}, NULL, &err), 2);
	assert_string_equal(err, "user-service: unknown option -x\n"
	                         "usage: user-service [-c FILE] [-o key=value]... [-h] [-V]\n");

	assert_int_equal(run_to_exit((const char *const[]){"-c", NULL}, NULL, &err), 2);
	assert_string_equal(err, "user-service: option -c needs a value\n"
	                         "usage: user-service [-c FILE] [-o key=value]... [-h] [-V]\n");

	assert_int_equal(run_to_exit((const char *const[]){"-o", conninfo_arg(), "-o",
	                                                   "worker.handler_timeout=2h", NULL},
	                             NULL, &err),
	                 3);
	assert_string_equal(err, "user-service: worker.handler_timeout (7200000 ms) must be shorter "
	                         "than broker.consumer_timeout (1800000 ms)\n");

	assert_int_equal(run_to_exit((const char *const[]){"-o", "nokey", NULL}, NULL, &err), 3);
	assert_string_equal(err, "user-service: -o \"nokey\": expected key=value\n");
}

static void sql(const char *text)
{
	PGconn *db = PQconnectdb(testenv_db());
	PGresult *res = PQexec(db, text);

	assert_true(PQresultStatus(res) == PGRES_COMMAND_OK);
	PQclear(res);
	PQfinish(db);
}

static void test_a_schema_newer_than_the_daemon_stops_it_with_status_3(void **state)
{
	char *err;

	sql("INSERT INTO user_service_schema VALUES (999)");
	assert_int_equal(run_to_exit((const char *const[]){"-o", conninfo_arg(), NULL}, NULL, &err),
	                 3);
	assert_string_equal(err, "user-service: the database schema is at version 999, newer than "
	                         "this user-service knows (1): run a newer user-service\n");
}

static int forget_schema_999(void **state)
{
	kill_daemon(state);
	sql("DELETE FROM user_service_schema WHERE version = 999");
	return 0;
}

static void test_sigterm_while_waiting_for_the_database_stops_cleanly(void **state)
{
	pid_t pid = spawn_daemon(
	    (const char *const[]){"-o", "db.conninfo=host=127.0.0.1 port=1 connect_timeout=1", NULL},
	    0, NULL);

	assert_true(await_note("STATUS=waiting for the database: cannot connect to the database: "
	                       "connection to server at \"127.0.0.1\", port 1 failed: Connection "
	                       "refused",
	                       10000));
	kill(pid, SIGHUP); /* a reload does not end the wait */
	usleep(300000);
	assert_int_equal(kill(pid, 0), 0);
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_ready_is_sent_only_once_consuming_then_status, kill_daemon),
		cmocka_unit_test_teardown(test_watchdog_stops_while_the_only_handler_is_stuck, kill_daemon),
		cmocka_unit_test_teardown(test_grace_expired_exits_1_and_the_request_is_answered_by_the_next_daemon, kill_daemon),
		cmocka_unit_test_teardown(test_a_second_sigterm_exits_1_and_the_request_is_answered_by_the_next_daemon, kill_daemon),
		cmocka_unit_test_teardown(test_a_draining_daemon_asks_for_its_grace_and_feeds_the_watchdog, kill_daemon),
		cmocka_unit_test_teardown(test_a_database_that_stays_down_pauses_consuming_instead_of_dead_lettering, database_up),
		cmocka_unit_test_teardown(test_sighup_reloads_the_log_level_and_refuses_a_bad_file, kill_daemon),
		cmocka_unit_test_teardown(test_the_connection_string_comes_from_the_credentials_directory, kill_daemon),
		cmocka_unit_test_teardown(test_start_up_errors_are_clear_and_have_their_exit_status, kill_daemon),
		cmocka_unit_test_teardown(test_with_no_conninfo_the_daemon_connects_as_libpq_does, kill_daemon),
		cmocka_unit_test_teardown(test_a_schema_newer_than_the_daemon_stops_it_with_status_3,
		                          forget_schema_999),
		cmocka_unit_test_teardown(test_sigterm_while_waiting_for_the_database_stops_cleanly, kill_daemon),
	};

	return cmocka_run_group_tests_name("daemon", tests, setup, teardown);
}
