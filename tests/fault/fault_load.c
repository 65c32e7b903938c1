/* fault_load.c: the steady load of the fault-injection kit. It calls
 * user-service at a fixed rate (reads: user.get of users made at the start;
 * writes: user.create of a new user each, with its own message_id) while a
 * fault happens around it, then accounts for every call and checks the
 * database against the writes:
 *
 *   fault_load SECONDS RATE DEADLINE_MS TAG
 *
 * SIGUSR2 marks the start of the fault, SIGUSR1 its end (the load goes on
 * for 2 s after it, if SECONDS are over by then): the report says how long
 * the fault lasted (outage_ms) and how long the service took to answer OK
 * again. It prints one line of key=value figures and exits 0 when the
 * guarantees held: nothing lost, no duplicated side effect, every timeout
 * within 100 ms of its deadline, every write answered OK in the database,
 * and those the scenario asks for in the environment:
 *
 *   FAULT_NO_FAILED=1        every call ends OK (failed = errors + timeouts)
 *   FAULT_WORST_MARGIN_MS=N  the slowest call ends within the fault's
 *                            length (SIGUSR2 to SIGUSR1) plus N ms
 *
 * The client runs with the library's defaults (the deadline alone decides
 * how long a call may wait) but for FAULT_CLIENT_OPTS: "key=value ..."
 * set on its configuration, each as -o would (a key this library does not
 * know is reported on stderr and skipped, so that the kit runs against a
 * library without it). Environment: WARREN_TEST_URL, WARREN_TEST_DB; with
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

#define MAX_CALLS   200000
#define RECOVERY_MS 2000 /* sent on after the fault, at least */
/* Past SECONDS, waiting for the fault to end: a rolling restart of three
 * nodes takes long. */
#define GRACE_MS   90000
#define READ_USERS 20
#define KINDS      (17 + 32) /* outcomes other than OK: by status, then by warren_err */

struct rec {
	int64_t sent, ended, deadline; /* monotonic ms */
	int outcome;                   /* -1 pending; 0..16 status; 100 + warren_err */
	bool write;
};

static struct rec *recs;
static atomic_int ended;
static atomic_llong fault_over;  /* monotonic ms, 0 until SIGUSR1 */
static atomic_llong fault_start; /* monotonic ms, 0 until SIGUSR2 */
static int64_t read_ids[READ_USERS];
static bool transient_reads; /* FAULT_TRANSIENT */
static bool once;            /* fault_load once: no call after the fault to recover */

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

static void on_usr2(int sig)
{
	atomic_store(&fault_start, mono_ms());
}

/* FAULT_CLIENT_OPTS, word by word, on cfg. An unknown key is skipped with
 * a word on stderr (the kit also runs against libraries without it); a bad
 * value of a known key is an error. */
static int apply_client_opts(warren_config *cfg)
{
	const char *env = getenv("FAULT_CLIENT_OPTS");
	char *copy, *save = NULL, why[256];
	int rc = 0;

	if (env == NULL) {
		return 0;
	}
	copy = strdup(env);
	for (char *w = strtok_r(copy, " ", &save); w != NULL; w = strtok_r(NULL, " ", &save)) {
		char key[128];

		snprintf(key, sizeof(key), "%.*s", (int)strcspn(w, "="), w);
		if (warren_config_get(cfg, key) == NULL) {
			fprintf(stderr, "fault_load: %s: not a key of this library, skipped\n",
			        key);
			continue;
		}
		if (warren_config_set_arg(cfg, w, why, sizeof(why)) != WARREN_OK) {
			fprintf(stderr, "fault_load: FAULT_CLIENT_OPTS: %s\n", why);
			rc = -1;
		}
	}
	free(copy);
	return rc;
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

/* An outcome's index among the kinds that are counted apart. */
static int kind_of(int outcome)
{
	int k = outcome < 100 ? outcome : 17 + (outcome - 100);

	return k >= 0 && k < KINDS ? k : KINDS - 1;
}

/* The first message of each kind of failure, for the report on stderr. */
static pthread_mutex_t first_mu = PTHREAD_MUTEX_INITIALIZER;
static char first_msg[KINDS][200];

static void on_done(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct rec *r = arg;

	r->ended = mono_ms();
	if (reply != NULL) {
		r->outcome = (int)warren_reply_status(reply);
	} else {
		r->outcome = 100 + (int)err;
	}
	if (r->outcome != WARREN_STATUS_OK && msg != NULL) {
		pthread_mutex_lock(&first_mu);
		if (first_msg[kind_of(r->outcome)][0] == '\0') {
			snprintf(first_msg[kind_of(r->outcome)], sizeof(first_msg[0]), "%s", msg);
		}
		pthread_mutex_unlock(&first_mu);
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

		snprintf(text, sizeof(text),
		         "{\"email\":\"%s-read-%d@example.org\",\"name\":\"R\"}", tag, i);
		p = json(text);
		err = warren_call(c, "user.create", p, &(warren_call_opts){.timeout_ms = 30000},
		                  &reply, NULL, 0);
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
	char text[200], mid[80], why[256] = "";
	warren_value *p;
	warren_call_opts o = {.timeout_ms = deadline_ms};
	warren_err err;

	r->write = i % 4 == 0;
	if (r->write) {
		snprintf(text, sizeof(text), "{\"email\":\"%s-w-%d@example.org\",\"name\":\"W\"}",
		         tag, i);
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
	/* A call refused at once ends there, as its callback would end it. */
	err = warren_call_async(c, r->write ? "user.create" : "user.get", p, &o, on_done, r, why,
	                        sizeof(why));
	if (err != WARREN_OK) {
		on_done(err, NULL, why, r);
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
		snprintf(sql, sizeof(sql),
		         "SELECT 1 FROM users WHERE email = '%s-w-%d@example.org'", tag, i);
		res = PQexec(db, sql);
		if (PQntuples(res) != 1) {
			(*missing)++;
		}
		PQclear(res);
	}
	PQfinish(db);
	return 0;
}

/* Every call's outcome, added up. */
struct tally {
	int sent, ok, timeouts, errors, lost, dup, late, writes, ok_writes;
	int64_t worst_late, recovered, slowest, outage; /* ms; -1: none */
	long rows, missing;
	int count[KINDS]; /* errors by kind (kind_of) */
};

static void tally_one(const struct rec *r, int64_t over, struct tally *t)
{
	t->writes += r->write;
	if (r->outcome < 0) {
		t->lost++;
		return;
	}
	if (r->outcome == WARREN_STATUS_OK) {
		t->ok++;
		t->ok_writes += r->write;
		if (r->ended - r->sent > t->slowest) {
			t->slowest = r->ended - r->sent;
		}
		if (over > 0 && r->sent >= over &&
		    (t->recovered < 0 || r->ended - over < t->recovered)) {
			t->recovered = r->ended - over;
		}
	} else if (r->outcome == 100 + WARREN_ERR_TIMEOUT) {
		t->timeouts++;
		if (r->ended - r->deadline > t->worst_late) {
			t->worst_late = r->ended - r->deadline;
		}
		if (r->ended - r->deadline > 100) {
			t->late++;
		}
	} else {
		t->errors++;
		t->count[kind_of(r->outcome)]++;
		if (r->write && r->outcome == WARREN_STATUS_ALREADY_EXISTS) {
			t->dup++; /* created twice: idempotency failed */
		}
	}
}

static void tally_calls(int n, struct tally *t)
{
	int64_t over = atomic_load(&fault_over), start = atomic_load(&fault_start);

	memset(t, 0, sizeof(*t));
	t->sent = n;
	t->recovered = -1;
	t->outage = over > 0 && start > 0 ? over - start : -1;
	for (int i = 0; i < n; i++) {
		tally_one(&recs[i], over, t);
	}
}

/* One line of key=value figures (tests/fault/test_faults.sh makes its
 * table from them). resent: the client's count of calls sent again after a
 * lost reply path, "-" with a library that does not count them. */
static void print_report(const struct tally *t, const warren_client_stats *st)
{
	char by_status[400] = "", resent[24] = "-";

	for (int s = 0; s < KINDS; s++) {
		if (t->count[s] > 0) {
			size_t len = strlen(by_status);
			snprintf(
			    by_status + len, sizeof(by_status) - len, "%s%s:%d", len > 0 ? "," : "",
			    s < 17 ? warren_status_name(s) : warren_err_str((warren_err)(s - 17)),
			    t->count[s]);
		}
	}
	for (int k = 0; k < KINDS; k++) {
		if (first_msg[k][0] != '\0') {
			fprintf(stderr, "fault_load: first %s: %s\n",
			        k < 17 ? warren_status_name(k)
			               : warren_err_str((warren_err)(k - 17)),
			        first_msg[k]);
		}
	}
#ifdef FAULT_HAVE_RESENT
	snprintf(resent, sizeof(resent), "%llu", (unsigned long long)st->resent);
#endif
	printf("sent=%d ok=%d failed=%d slowest_ok_ms=%lld outage_ms=%lld errors=%d[%s] "
	       "timeouts=%d lost=%d worst_timeout_late_ms=%lld late_timeouts=%d writes=%d "
	       "ok_writes=%d rows=%ld missing_rows=%ld duplicated=%d recovered_ms=%lld "
	       "reconnects=%llu resent=%s republished=%llu fast_sent=%llu fast_fallbacks=%llu\n",
	       t->sent, t->ok, t->errors + t->timeouts, (long long)t->slowest, (long long)t->outage,
	       t->errors, by_status, t->timeouts, t->lost, (long long)t->worst_late, t->late,
	       t->writes, t->ok_writes, t->rows, t->missing, t->dup, (long long)t->recovered,
	       (unsigned long long)st->reconnects, resent, (unsigned long long)st->republished,
	       (unsigned long long)st->fast_sent, (unsigned long long)st->fast_fallbacks);
}

/* held &= ok; when not, says why on stderr. */
static void require(bool *held, bool ok, const char *why)
{
	if (!ok) {
		fprintf(stderr, "fault_load: %s\n", why);
		*held = false;
	}
}

/* The guarantees, each failure said on stderr. Rows between the OK writes
 * and all writes: a write that timed out may still have been applied, once.
 * Then what the scenario asks for (FAULT_NO_FAILED, FAULT_WORST_MARGIN_MS). */
static bool guarantees_held(const struct tally *t)
{
	const char *no_failed = getenv("FAULT_NO_FAILED");
	const char *margin = getenv("FAULT_WORST_MARGIN_MS");
	bool held = true;
	char why[200];

	require(&held, t->lost == 0, "calls lost: they never ended");
	require(&held, t->late == 0, "timeouts more than 100 ms after their deadline");
	require(&held, t->dup == 0, "writes answered ALREADY_EXISTS: made twice");
	require(&held, t->missing == 0, "writes answered OK without their row");
	require(&held, t->rows >= t->ok_writes && t->rows <= t->writes,
	        "rows outside [OK writes, writes]");
	require(&held,
	        atomic_load(&fault_over) == 0 || once ||
	            (t->recovered >= 0 && t->recovered < 10000),
	        "no call sent after the fault ended OK within 10 s of its end");
	snprintf(why, sizeof(why), "%d calls failed, none may", t->errors + t->timeouts);
	require(&held, no_failed == NULL || no_failed[0] != '1' || t->errors + t->timeouts == 0,
	        why);
	snprintf(why, sizeof(why),
	         "the slowest call took %lld ms, past the fault's %lld ms and %s ms",
	         (long long)t->slowest, (long long)t->outage, margin != NULL ? margin : "");
	require(&held, margin == NULL || t->outage < 0 || t->slowest <= t->outage + atoll(margin),
	        why);
	return held;
}

/* The load: RATE calls a second for SECONDS (and on, sending()). */
static int run_load(warren_client *c, int seconds, int rate, int deadline_ms, const char *tag)
{
	int64_t t0 = mono_ms(), stop_at = t0 + (int64_t)seconds * 1000;
	int n = 0;

	while (sending(stop_at) && n < MAX_CALLS) {
		int64_t due = t0 + (int64_t)n * 1000 / rate;
		int64_t now = mono_ms();

		if (due > now) {
			usleep((useconds_t)(due - now) * 1000);
		}
		send_one(c, n, deadline_ms, tag);
		n++;
	}
	return n;
}

static warren_client *open_client(warren_config *cfg)
{
	warren_client *c = NULL;
	char why[512];

	warren_config_set(cfg, "broker.url", getenv("WARREN_TEST_URL"), NULL, 0);
	warren_config_set(cfg, "log.level", "error", NULL, 0);
	warren_config_set(cfg, "broker.heartbeat", "2s", NULL, 0);
	if (apply_client_opts(cfg) != 0) {
		return NULL;
	}
	warren_log_configure(cfg, "fault_load");
	if (warren_client_new(cfg, "fault_load", &c, why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, "fault_load: %s\n", why);
		return NULL;
	}
	return c;
}

/* fault_load SECONDS RATE DEADLINE_MS TAG: the load. fault_load once
 * DEADLINE_MS TAG: a single write (user.create, message id TAG-w-0), sent
 * once "ready" is printed, accounted for as the load's calls are (the
 * resent_once scenario breaks its reply path while it runs). */
int main(int argc, char **argv)
{
	warren_config *cfg = warren_config_new();
	warren_client *c = NULL;
	int deadline_ms, n;
	const char *tag;
	int64_t give_up;

	once = argc == 4 && strcmp(argv[1], "once") == 0;
	if (argc != 5 && !once) {
		fprintf(stderr, "usage: fault_load SECONDS RATE DEADLINE_MS TAG\n"
		                "       fault_load once DEADLINE_MS TAG\n");
		return 2;
	}
	deadline_ms = atoi(argv[argc - 2]);
	tag = argv[argc - 1];
	recs = calloc(MAX_CALLS, sizeof(*recs));
	transient_reads = getenv("FAULT_TRANSIENT") != NULL;
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	c = open_client(cfg);
	if (c == NULL || (!once && make_read_users(c, tag) != 0)) {
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	if (once) {
		send_one(c, 0, deadline_ms, tag);
		n = 1;
	} else {
		n = run_load(c, atoi(argv[1]), atoi(argv[2]), deadline_ms, tag);
	}
	/* Every call ends by its deadline; wait that long and a margin more. */
	give_up = mono_ms() + deadline_ms + 5000;
	while (atomic_load(&ended) < n && mono_ms() < give_up) {
		usleep(20000);
	}

	struct tally t;
	warren_client_stats st;
	bool held;

	tally_calls(n, &t);
	warren_client_get_stats(c, &st);
	warren_client_free(c);
	warren_config_free(cfg);
	if (check_db(tag, n, &t.rows, &t.missing) != 0) {
		return 1;
	}
	print_report(&t, &st);
	held = guarantees_held(&t);
	free(recs);
	return held ? 0 : 1;
}
