/* fault_load.c: the steady load of the fault-injection kit. It calls
 * user-service at a fixed rate (reads: user.get of users made at the start;
 * writes: user.create of a new user each, with its own message_id) while a
 * fault happens around it, then accounts for every call and checks the
 * database against the writes:
 *
 *   fault_load SECONDS RATE DEADLINE_MS TAG
 *
 * SIGUSR1 marks the end of the fault (the load goes on for 2 s after it, if
 * SECONDS are over by then): the report says how long the service
 * took to answer OK again. It prints one line of key=value figures and
 * exits 0 when the guarantees held: nothing lost, no duplicated side effect,
 * every timeout within 100 ms of its deadline, every write answered OK in
 * the database. Environment: WARREN_TEST_URL, WARREN_TEST_DB; with
 * FAULT_TRANSIENT set, the reads are transient calls, on the fast lane. */
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "warren.h"

#define MAX_CALLS 200000
#define RECOVERY_MS 2000  /* sent on after the fault, at least */
#define GRACE_MS    30000 /* past SECONDS, waiting for the fault to end */
#define READ_USERS 20

struct rec {
	int64_t sent, ended, deadline; /* monotonic ms */
	int outcome;                   /* -1 pending; 0..16 status; 100 + warren_err */
	bool write;
};

static struct rec *recs;
static atomic_int ended;
static atomic_llong fault_over; /* monotonic ms, 0 until SIGUSR1 */
static int64_t read_ids[READ_USERS];
static bool transient_reads; /* FAULT_TRANSIENT */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_usr1(int sig)
{
	atomic_store(&fault_over, mono_ms());
}

/* The load runs SECONDS, and on past them until RECOVERY_MS after the
 * fault's end (at most GRACE_MS more): on a slow machine the fault's
 * commands can end after SECONDS, and recovery is measured on calls sent
 * after the fault. */
static bool sending(int64_t stop_at)
{
	int64_t now = mono_ms(), over = atomic_load(&fault_over);

	if (now < stop_at) {
		return true;
	}
	if (now >= stop_at + GRACE_MS) {
		return false;
	}
	return over == 0 || now < over + RECOVERY_MS;
}

static void on_done(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct rec *r = arg;

	r->ended = mono_ms();
	if (reply != NULL) {
		r->outcome = (int)warren_reply_status(reply);
	} else {
		r->outcome = 100 + (int)err;
	}
	warren_reply_free(reply);
	atomic_fetch_add(&ended, 1);
}

static warren_value *json(const char *text)
{
	warren_value *v = NULL;

	if (warren_value_from_json(text, strlen(text), &v, NULL, 0) != WARREN_OK) {
		abort();
	}
	return v;
}

/* The users the reads look up, made before the fault. */
static int make_read_users(warren_client *c, const char *tag)
{
	for (int i = 0; i < READ_USERS; i++) {
		char text[200];
		warren_value *p;
		warren_reply *reply = NULL;
		warren_err err;

		snprintf(text, sizeof(text), "{\"email\":\"%s-read-%d@example.org\",\"name\":\"R\"}",
		         tag, i);
		p = json(text);
		err = warren_call(c, "user.create", p, &(warren_call_opts){.timeout_ms = 30000}, &reply,
		                  NULL, 0);
		warren_value_free(p);
		if (err != WARREN_OK ||
		    !warren_value_get_int(warren_map_get(warren_reply_result(reply), "id"),
		                          &read_ids[i])) {
			fprintf(stderr, "fault_load: cannot create the read users: %s\n",
			        warren_err_str(err));
			warren_reply_free(reply);
			return -1;
		}
		warren_reply_free(reply);
	}
	return 0;
}

static void send_one(warren_client *c, int i, int deadline_ms, const char *tag)
{
	struct rec *r = &recs[i];
	char text[200], mid[80];
	warren_value *p;
	warren_call_opts o = {.timeout_ms = deadline_ms};

	r->write = i % 4 == 0;
	if (r->write) {
		snprintf(text, sizeof(text), "{\"email\":\"%s-w-%d@example.org\",\"name\":\"W\"}", tag, i);
		snprintf(mid, sizeof(mid), "%s-w-%d", tag, i);
		o.message_id = mid;
	} else {
		snprintf(text, sizeof(text), "{\"id\":%lld}", (long long)read_ids[i % READ_USERS]);
		o.transient = transient_reads;
	}
	p = json(text);
	r->outcome = -1;
	r->sent = mono_ms();
	r->deadline = r->sent + deadline_ms;
	if (warren_call_async(c, r->write ? "user.create" : "user.get", p, &o, on_done, r, NULL, 0) !=
	    WARREN_OK) {
		r->ended = r->sent;
		r->outcome = 100 + WARREN_ERR_CLOSED;
		atomic_fetch_add(&ended, 1);
	}
	warren_value_free(p);
}

/* Rows of this run's writes, and whether every write answered OK is one. */
static int check_db(const char *tag, int n, long *rows, long *missing)
{
	PGconn *db = PQconnectdb(getenv("WARREN_TEST_DB"));
	char sql[300];
	PGresult *res;

	*rows = *missing = 0;
	if (PQstatus(db) != CONNECTION_OK) {
		fprintf(stderr, "fault_load: database: %s", PQerrorMessage(db));
		PQfinish(db);
		return -1;
	}
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM users WHERE email LIKE '%s-w-%%'", tag);
	res = PQexec(db, sql);
	*rows = atol(PQgetvalue(res, 0, 0));
	PQclear(res);
	for (int i = 0; i < n; i++) {
		if (!recs[i].write || recs[i].outcome != WARREN_STATUS_OK) {
			continue;
		}
		snprintf(sql, sizeof(sql), "SELECT 1 FROM users WHERE email = '%s-w-%d@example.org'",
		         tag, i);
		res = PQexec(db, sql);
		if (PQntuples(res) != 1) {
			(*missing)++;
		}
		PQclear(res);
	}
	PQfinish(db);
	return 0;
}

int main(int argc, char **argv)
{
	warren_config *cfg = warren_config_new();
	warren_client *c = NULL;
	char why[512];
	int seconds, rate, deadline_ms, n = 0;
	const char *tag;
	int64_t t0, stop_at, give_up;

	if (argc != 5) {
		fprintf(stderr, "usage: fault_load SECONDS RATE DEADLINE_MS TAG\n");
		return 2;
	}
	seconds = atoi(argv[1]);
	rate = atoi(argv[2]);
	deadline_ms = atoi(argv[3]);
	tag = argv[4];
	recs = calloc(MAX_CALLS, sizeof(*recs));
	transient_reads = getenv("FAULT_TRANSIENT") != NULL;
	signal(SIGUSR1, on_usr1);
	warren_config_set(cfg, "broker.url", getenv("WARREN_TEST_URL"), NULL, 0);
	warren_config_set(cfg, "log.level", "error", NULL, 0);
	warren_config_set(cfg, "broker.heartbeat", "2s", NULL, 0);
	/* Keep publishing through a broker restart, within the deadline. */
	warren_config_set(cfg, "client.retry_attempts", "10", NULL, 0);
	warren_log_configure(cfg, "fault_load");
	if (warren_client_new(cfg, "fault_load", &c, why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, "fault_load: %s\n", why);
		return 1;
	}
	if (make_read_users(c, tag) != 0) {
		return 1;
	}
	printf("ready\n");
	fflush(stdout);

	t0 = mono_ms();
	stop_at = t0 + (int64_t)seconds * 1000;
	while (sending(stop_at) && n < MAX_CALLS) {
		int64_t due = t0 + (int64_t)n * 1000 / rate;
		int64_t now = mono_ms();

		if (due > now) {
			usleep((useconds_t)(due - now) * 1000);
		}
		send_one(c, n, deadline_ms, tag);
		n++;
	}
	/* Every call ends by its deadline; wait that long and a margin more. */
	give_up = mono_ms() + deadline_ms + 5000;
	while (atomic_load(&ended) < n && mono_ms() < give_up) {
		usleep(20000);
	}

	int ok = 0, timeouts = 0, errors = 0, lost = 0, dup = 0, late = 0;
	int64_t worst_late = 0, recovered = -1, slowest = 0;
	char by_status[400] = "";
	int count[17 + 13] = {0};
	int64_t over = atomic_load(&fault_over);

	for (int i = 0; i < n; i++) {
		struct rec *r = &recs[i];

		if (r->outcome < 0) {
			lost++;
			continue;
		}
		if (r->outcome == WARREN_STATUS_OK) {
			ok++;
			if (r->ended - r->sent > slowest) {
				slowest = r->ended - r->sent;
			}
			if (over > 0 && r->sent >= over && (recovered < 0 || r->ended - over < recovered)) {
				recovered = r->ended - over;
			}
		} else if (r->outcome == 100 + WARREN_ERR_TIMEOUT) {
			timeouts++;
			if (r->ended - r->deadline > worst_late) {
				worst_late = r->ended - r->deadline;
			}
			if (r->ended - r->deadline > 100) {
				late++;
			}
		} else {
			errors++;
			count[r->outcome < 100 ? r->outcome : 17 + (r->outcome - 100)]++;
			if (r->write && r->outcome == WARREN_STATUS_ALREADY_EXISTS) {
				dup++; /* created twice: idempotency failed */
			}
		}
	}
	for (int s = 0; s < 17 + 13; s++) {
		if (count[s] > 0) {
			size_t len = strlen(by_status);
			snprintf(by_status + len, sizeof(by_status) - len, "%s%s:%d",
			         len > 0 ? "," : "",
			         s < 17 ? warren_status_name(s) : warren_err_str((warren_err)(s - 17)),
			         count[s]);
		}
	}
	warren_client_stats st;
	warren_client_get_stats(c, &st);
	warren_client_free(c);
	warren_config_free(cfg);

	long rows = 0, missing = 0;
	int writes = 0, ok_writes = 0;
	for (int i = 0; i < n; i++) {
		writes += recs[i].write;
		ok_writes += recs[i].write && recs[i].outcome == WARREN_STATUS_OK;
	}
	if (check_db(tag, n, &rows, &missing) != 0) {
		return 1;
	}
	printf("sent=%d ok=%d slowest_ok_ms=%lld errors=%d[%s] timeouts=%d lost=%d "
	       "worst_timeout_late_ms=%lld "
	       "late_timeouts=%d writes=%d ok_writes=%d rows=%ld missing_rows=%ld duplicated=%d "
	       "recovered_ms=%lld reconnects=%llu republished=%llu fast_sent=%llu "
	       "fast_fallbacks=%llu\n",
	       n, ok, (long long)slowest, errors, by_status, timeouts, lost, (long long)worst_late,
	       late, writes,
	       ok_writes, rows, missing, dup, (long long)recovered,
	       (unsigned long long)st.reconnects, (unsigned long long)st.republished,
	       (unsigned long long)st.fast_sent, (unsigned long long)st.fast_fallbacks);
	/* The guarantees. Rows between the OK writes and all writes: a write
	 * that timed out may still have been applied, once. */
	bool held = lost == 0 && late == 0 && dup == 0 && missing == 0 && rows >= ok_writes &&
	            rows <= writes && (over == 0 || (recovered >= 0 && recovered < 10000));
	free(recs);
	return held ? 0 : 1;
}
