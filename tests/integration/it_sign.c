/* it_sign.c: signed and encrypted calls against the private broker, for
 * both schemes: a signed call is answered (and its reply signed); an
 * unsigned, badly signed, unknown-key or stale request is never run,
 * dead-lettered and never answered (nor one whose envelope cannot be
 * read); a key the allow list does not name gets PERMISSION_DENIED; a
 * replayed request runs once, a retry under the same message id is
 * answered; a request past its deadline is expired before its signature
 * is checked; a caller refuses a reply it cannot verify. Encrypted bodies (security.encrypt): answered,
 * unreadable on the broker both ways, refused in the clear, refused when
 * sealed with another key or sent to a worker without keys; through a
 * service key change; replies that break a call's encryption refused; the
 * client's configuration errors. What signing and encryption cost is
 * measured by make bench (tests/bench), not here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "envelope.h"
#include "seal.h"
#include "security.h"
#include "sign.h"
#include "testenv.h"
#include "warren.h"

static char dir[64];
static atomic_int runs;

static warren_status echo(warren_request *req, void *arg)
{
	atomic_fetch_add(&runs, 1);
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

/* UNAVAILABLE on a request's first attempt, then an echo. */
static warren_status flaky(warren_request *req, void *arg)
{
	if (warren_request_attempt(req) == 1) {
		return warren_request_fail(req, WARREN_STATUS_UNAVAILABLE, NULL, "not yet");
	}
	return echo(req, arg);
}

static void put(const char *name, const unsigned char *key, size_t len, mode_t mode)
{
	testenv_write_key(dir, name, key, len, mode);
}

/* Keys for both schemes: mac secrets "app" and "ops" shared with the
 * service; ed25519 pairs for "app" and the service "svc". Keyrings:
 * DIR/mac-svc (the service's: app, ops), DIR/mac-app (the caller's: svc),
 * DIR/ed-svc (app's public key), DIR/ed-app (svc's public key), and
 * DIR/ed-app2 (svc's and its next key svc2's: a key change). */
static int setup(void **state)
{
	unsigned char k[64], pk[32];
	char path[160];

	snprintf(dir, sizeof(dir), "/tmp/it-sign-%ld", (long)getpid());
	if (sodium_init() < 0 || mkdir(dir, 0700) != 0) {
		return -1;
	}
	for (const char *const *d = (const char *const[]){"mac-svc", "mac-app", "ed-svc", "ed-app",
	                                                  "ed-app2", NULL};
	     *d != NULL; d++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *d);
		mkdir(path, 0700);
	}
	crypto_auth_keygen(k);
	put("app.mac", k, 32, 0600);
	put("mac-svc/app.key", k, 32, 0600);
	crypto_auth_keygen(k);
	put("ops.mac", k, 32, 0600);
	put("mac-svc/ops.key", k, 32, 0600);
	crypto_auth_keygen(k);
	put("svc.mac", k, 32, 0600);
	put("mac-app/svc.key", k, 32, 0600);
	crypto_sign_keypair(pk, k);
	put("app.ed", k, 64, 0600);
	put("ed-svc/app.key", pk, 32, 0644);
	crypto_sign_keypair(pk, k);
	put("svc.ed", k, 64, 0600);
	put("ed-app/svc.key", pk, 32, 0644);
	put("ed-app2/svc.key", pk, 32, 0644);
	/* The service's next key, while "svc" retires. */
	crypto_sign_keypair(pk, k);
	put("svc2.ed", k, 64, 0600);
	put("ed-app2/svc2.key", pk, 32, 0644);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

/* A config with the [security] keys for one side, encrypting the
 * methods of encrypt (NULL: none). */
static warren_config *side_enc(const char *scheme, const char *id, const char *key,
                               const char *ring, const char *allow, const char *encrypt)
{
	char k[200], r[200], a[300], i[100], s[100], e[200];

	snprintf(s, sizeof(s), "security.scheme=%s", scheme);
	snprintf(i, sizeof(i), "security.key_id=%s", id);
	snprintf(k, sizeof(k), "security.key_file=%s/%s", dir, key);
	snprintf(r, sizeof(r), "security.keyring=%s/%s", dir, ring);
	snprintf(a, sizeof(a), "security.allow=%s", allow != NULL ? allow : "");
	snprintf(e, sizeof(e), "security.encrypt=%s", encrypt != NULL ? encrypt : "");
	return testenv_config((const char *const[]){"worker.service=secure", s, i, k, r, a, e,
	                                            "log.level=error", NULL});
}

static warren_config *side(const char *scheme, const char *id, const char *key, const char *ring,
                           const char *allow)
{
	return side_enc(scheme, id, key, ring, allow, NULL);
}

static warren_worker *start_worker(warren_config *cfg)
{
	warren_worker *w = NULL;
	char why[300] = "";

	assert_int_equal(warren_worker_new(cfg, &w, why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_worker_handle(w, "secure.echo", echo, NULL), WARREN_OK);
	assert_int_equal(warren_worker_handle(w, "secure.admin", echo, NULL), WARREN_OK);
	assert_int_equal(warren_worker_handle(w, "secure.flaky", flaky, NULL), WARREN_OK);
	assert_int_equal(warren_worker_start(w, why, sizeof(why)), WARREN_OK);
	return w;
}

static warren_client *start_client(warren_config *cfg)
{
	warren_client *c = NULL;
	char why[300] = "";

	assert_int_equal(warren_client_new(cfg, "it_sign", &c, why, sizeof(why)), WARREN_OK);
	return c;
}

/* Calls method with a deadline timeout_ms away; its status (or -1 with
 * the local error's text in why, and the error in *errp when not NULL). */
static int call_within(warren_client *c, const char *method, int64_t timeout_ms, warren_err *errp,
                       char *why, size_t len)
{
	warren_reply *reply = NULL;
	warren_err err = warren_call(c, method, NULL, &(warren_call_opts){.timeout_ms = timeout_ms},
	                             &reply, why, len);
	int status = -1;

	if (reply != NULL) {
		status = (int)warren_reply_status(reply);
		snprintf(why, len, "%s", warren_reply_message(reply));
	} else if (err == WARREN_OK) {
		status = 0;
	}
	if (errp != NULL) {
		*errp = err;
	}
	warren_reply_free(reply);
	return status;
}

static int call(warren_client *c, const char *method, char *why, size_t len)
{
	return call_within(c, method, 5000, NULL, why, len);
}

static void signed_calls_work(const char *scheme, const char *svc_key, const char *svc_ring,
                              const char *app_key, const char *app_ring)
{
	warren_config *wc = side(scheme, "svc", svc_key, svc_ring, NULL);
	warren_config *cc = side(scheme, "app", app_key, app_ring, NULL);
	warren_worker *w = start_worker(wc);
	warren_client *c = start_client(cc);
	char why[300] = "";

	atomic_store(&runs, 0);
	assert_int_equal(call(c, "secure.echo", why, sizeof(why)), WARREN_STATUS_OK);
	assert_int_equal(atomic_load(&runs), 1);
	/* A retry through a delay tier is the same request again, not a replay. */
	assert_int_equal(call(c, "secure.flaky", why, sizeof(why)), WARREN_STATUS_OK);
	assert_int_equal(atomic_load(&runs), 2);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(cc);
}

static void test_a_signed_call_is_answered_with_mac(void **state)
{
	signed_calls_work("mac", "svc.mac", "mac-svc", "app.mac", "mac-app");
}

static void test_a_signed_call_is_answered_with_ed25519(void **state)
{
	signed_calls_work("ed25519", "svc.ed", "ed-svc", "app.ed", "ed-app");
}

/* ------------------------------------------------- republished signed calls */

/* Calls of secure.echo kept in flight by chains that start the next call
 * from the completion of the last, until stop. */
struct churn {
	warren_client *c;
	atomic_bool stop;
	atomic_int in_flight, ok, failed;
	char first_failure[300];
	atomic_flag failure_kept;
};

static void churn_next(struct churn *ch);

static void churn_done(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct churn *ch = arg;

	if (err == WARREN_OK) {
		atomic_fetch_add(&ch->ok, 1);
	} else {
		atomic_fetch_add(&ch->failed, 1);
		if (!atomic_flag_test_and_set(&ch->failure_kept)) {
			snprintf(ch->first_failure, sizeof(ch->first_failure), "err %d: %s%s",
			         (int)err, msg, reply != NULL ? warren_reply_message(reply) : "");
		}
	}
	warren_reply_free(reply);
	if (!atomic_load(&ch->stop)) {
		churn_next(ch);
	}
	atomic_fetch_sub(&ch->in_flight, 1);
}

static void churn_next(struct churn *ch)
{
	atomic_fetch_add(&ch->in_flight, 1);
	if (warren_call_async(ch->c, "secure.echo", NULL, &(warren_call_opts){.timeout_ms = 20000},
	                      churn_done, ch, NULL, 0) != WARREN_OK) {
		atomic_fetch_add(&ch->failed, 1);
		atomic_fetch_sub(&ch->in_flight, 1);
	}
}

/* Stops the chains and waits (up to 30 s) until every call has ended. */
static void churn_finish(struct churn *ch)
{
	atomic_store(&ch->stop, true);
	for (int t = 0; t < 1500 && atomic_load(&ch->in_flight) > 0; t++) {
		usleep(20000);
	}
	assert_int_equal(atomic_load(&ch->in_flight), 0);
}

static warren_client_stats client_stats(warren_client *c)
{
	warren_client_stats st;

	warren_client_get_stats(c, &st);
	return st;
}

/* A signed call that finds no queue bound for its method (a service being
 * deployed) is returned and published again by its caller: the same call,
 * rpc-attempt 1, re-signed. Once the binding is back, every call is
 * answered. Before, the republish carried rpc-attempt 2 with no retry
 * token and was refused as bad-signature (UNAUTHENTICATED). */
static void republished_after_a_return(const char *scheme, const char *svc_key,
                                       const char *svc_ring, const char *app_key,
                                       const char *app_ring)
{
	warren_config *wc = side(scheme, "svc", svc_key, svc_ring, NULL);
	warren_config *cc = side(scheme, "app", app_key, app_ring, NULL);
	warren_worker *w = start_worker(wc);
	warren_client *c;
	struct raw *r = raw_connect();
	struct churn ch = {.failure_kept = ATOMIC_FLAG_INIT};
	amqp_connection_state_t conn = raw_conn(r);

	assert_int_equal(warren_config_set(cc, "client.retry_attempts", "12", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cc, "client.retry_delay", "50ms", NULL, 0), WARREN_OK);
	c = start_client(cc);
	ch.c = c;
	assert_non_null(amqp_queue_unbind(conn, 1, amqp_cstring_bytes("rpc.secure"),
	                                  amqp_cstring_bytes("rpc"), amqp_cstring_bytes("secure.#"),
	                                  amqp_empty_table));
	for (int i = 0; i < 8; i++) {
		churn_next(&ch);
	}
	/* Each returned and published again at least once. */
	for (int t = 0; t < 500 && client_stats(c).republished < 8; t++) {
		usleep(10000);
	}
	assert_true(client_stats(c).republished >= 8);
	assert_non_null(amqp_queue_bind(conn, 1, amqp_cstring_bytes("rpc.secure"),
	                                amqp_cstring_bytes("rpc"), amqp_cstring_bytes("secure.#"),
	                                amqp_empty_table));
	churn_finish(&ch);
	if (atomic_load(&ch.failed) != 0) {
		fail_msg("%d of %d calls failed; first: %s", atomic_load(&ch.failed),
		         atomic_load(&ch.failed) + atomic_load(&ch.ok), ch.first_failure);
	}
	assert_true(atomic_load(&ch.ok) >= 8);
	raw_close(r);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(cc);
}

static void test_signed_calls_republished_after_a_return_succeed_with_mac(void **state)
{
	republished_after_a_return("mac", "svc.mac", "mac-svc", "app.mac", "mac-app");
}

static void test_signed_calls_republished_after_a_return_succeed_with_ed25519(void **state)
{
	republished_after_a_return("ed25519", "svc.ed", "ed-svc", "app.ed", "ed-app");
}

/* The broker closes every connection while signed calls are in flight:
 * a request in flight is sent again by its caller once the connection is
 * back (re-signed, rpc-attempt 1): republished when it was not confirmed
 * yet, resent (client.resend) when it was, its first reply path gone with
 * the connection (direct reply-to); calls made while the client is
 * disconnected (a slow reconnect, broker.reconnect_min) wait and are
 * published once it is back; and every call is answered. Before, each
 * republish raised rpc-attempt and was refused as bad-signature (no
 * rpc-retry-token); a copy signed as the first was would be refused by
 * the worker's replay filter. */
static void republished_after_a_lost_connection(const char *scheme, const char *svc_key,
                                                const char *svc_ring, const char *app_key,
                                                const char *app_ring)
{
	warren_config *wc = side(scheme, "svc", svc_key, svc_ring, NULL);
	warren_config *cc = side(scheme, "app", app_key, app_ring, NULL);
	warren_worker *w = start_worker(wc);
	warren_client *c;
	struct churn ch = {.failure_kept = ATOMIC_FLAG_INIT};

	assert_int_equal(warren_config_set(cc, "client.retry_attempts", "12", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cc, "client.retry_delay", "50ms", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cc, "broker.reconnect_min", "2s", NULL, 0), WARREN_OK);
	c = start_client(cc);
	ch.c = c;
	for (int i = 0; i < 16; i++) {
		churn_next(&ch);
	}
	usleep(200000);
	assert_int_equal(testenv_broker_ctl("close_all_connections it_sign"), 0);
	/* Calls made before the client reconnects (1 to 2 s after the loss). */
	for (int t = 0; t < 500 && client_stats(c).connected; t++) {
		usleep(5000);
	}
	assert_false(client_stats(c).connected);
	for (int i = 0; i < 8; i++) {
		churn_next(&ch);
	}
	for (int t = 0; t < 500 && client_stats(c).reconnects < 1; t++) {
		usleep(20000);
	}
	assert_true(client_stats(c).reconnects >= 1);
	usleep(300000);
	churn_finish(&ch);
	if (atomic_load(&ch.failed) != 0) {
		fail_msg("%d of %d calls failed; first: %s", atomic_load(&ch.failed),
		         atomic_load(&ch.failed) + atomic_load(&ch.ok), ch.first_failure);
	}
	/* Of the 16 chains, those whose request was out at the close were sent
	 * again, one way or the other: how many were out then (rather than
	 * being signed for their next call, slow under ASan with ed25519, or
	 * answered a moment before) is the machine's matter; that one was, and
	 * every call was answered, is the test's. */
	assert_true(client_stats(c).republished + client_stats(c).resent >= 1);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(cc);
}

/* A signed call held through an outage longer than the worker's
 * security.window goes out signed afresh. Signed only when it was made,
 * it was refused as outside the window (bad-signature, never answered)
 * and ended at its deadline. */
static void test_a_signed_call_held_longer_than_the_window_is_answered(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", NULL);
	warren_config *cc = side("mac", "app", "app.mac", "mac-app", NULL);
	warren_reply *reply = NULL;
	warren_worker *w;
	warren_client *c;
	char why[300] = "";

	assert_int_equal(warren_config_set(wc, "security.window", "1s", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cc, "broker.reconnect_min", "3s", NULL, 0), WARREN_OK);
	assert_int_equal(warren_config_set(cc, "broker.reconnect_max", "3s", NULL, 0), WARREN_OK);
	w = start_worker(wc);
	c = start_client(cc);
	assert_int_equal(testenv_broker_ctl("close_all_connections it_sign"), 0);
	for (int t = 0; t < 500 && client_stats(c).connected; t++) {
		usleep(5000);
	}
	assert_false(client_stats(c).connected);
	assert_int_equal(warren_call(c, "secure.echo", NULL, &(warren_call_opts){.timeout_ms = 15000},
	                             &reply, why, sizeof(why)),
	                 WARREN_OK);
	warren_reply_free(reply);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(cc);
}

static void test_signed_calls_republished_after_a_lost_connection_succeed_with_mac(void **state)
{
	republished_after_a_lost_connection("mac", "svc.mac", "mac-svc", "app.mac", "mac-app");
}

static void test_signed_calls_republished_after_a_lost_connection_succeed_with_ed25519(void **state)
{
	republished_after_a_lost_connection("ed25519", "svc.ed", "ed-svc", "app.ed", "ed-app");
}

/* Whether got is want; want NULL: a stale signature's error, whatever its
 * age. */
static bool error_is(const char *got, const char *want)
{
	char stale[200];
	long long ms = 0;

	if (want == NULL) {
		if (sscanf(got, "signed %lld ms away", &ms) != 1) {
			return false;
		}
		snprintf(stale, sizeof(stale),
		         "signed %lld ms away from now, outside security.window", ms);
		want = stale;
	}
	return strcmp(got, want) == 0;
}

/* The n dead letters of rpc.secure.dlq (taken from it) have the reasons
 * and errors of want[0..n) (errors as error_is reads them), in any order. */
static void assert_dead_letters(struct raw *r, int n, const char *const want[][2])
{
	bool seen[8] = {false};

	assert_true(n <= 8);
	for (int i = 0; i < n; i++) {
		amqp_message_t msg;
		char reason[64];
		const char *got;
		int k = 0;

		assert_int_equal(raw_get(r, "rpc.secure.dlq", &msg), 0);
		snprintf(reason, sizeof(reason), "%s",
		         raw_header(&msg.properties, "rpc-dead-reason"));
		got = raw_header(&msg.properties, "rpc-dead-error");
		while (k < n &&
		       (seen[k] || strcmp(reason, want[k][0]) != 0 || !error_is(got, want[k][1]))) {
			k++;
		}
		if (k == n) {
			fail_msg("unexpected dead letter: %s: %s", reason, got);
		}
		seen[k] = true;
		amqp_destroy_message(&msg);
	}
}

/* A request whose signature does not verify is never answered (see
 * test_a_request_that_fails_authentication_gets_no_reply): its caller's
 * call ends at its deadline, and the dead letter says why. An
 * authentic request the allow list refuses is answered. */
static void test_refusals_never_run_the_handler(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", "secure.admin=ops,*=app+ops");
	warren_worker *w = start_worker(wc);
	warren_config *plain = testenv_config(NULL);
	warren_config *intruder = side("mac", "intruder", "app.mac", "mac-app", NULL);
	warren_config *app = side("mac", "app", "app.mac", "mac-app", NULL);
	struct raw *r = raw_connect();
	warren_client *c;
	warren_worker_stats st;
	warren_err err;
	char why[300];

	atomic_store(&runs, 0);
	raw_purge(r, "rpc.secure.dlq");
	c = start_client(plain);
	assert_int_equal(call_within(c, "secure.echo", 1000, &err, why, sizeof(why)), -1);
	assert_int_equal(err, WARREN_ERR_TIMEOUT);
	warren_client_free(c);

	/* Signed with app's secret but under an id the service does not know. */
	c = start_client(intruder);
	assert_int_equal(call_within(c, "secure.echo", 1000, &err, why, sizeof(why)), -1);
	assert_int_equal(err, WARREN_ERR_TIMEOUT);
	warren_client_free(c);
	assert_int_equal(raw_await_count(r, "rpc.secure.dlq", 2, 5000), 2);
	assert_dead_letters(
	    r, 2,
	    (const char *const[][2]){{"bad-signature", "not signed (security.scheme is mac)"},
	                             {"bad-signature", "unknown key \"intruder\""}});

	c = start_client(app);
	assert_int_equal(call(c, "secure.admin", why, sizeof(why)), WARREN_STATUS_PERMISSION_DENIED);
	assert_string_equal(why, "key \"app\" may not call secure.admin");
	assert_int_equal(call(c, "secure.echo", why, sizeof(why)), WARREN_STATUS_OK);
	warren_client_free(c);

	assert_int_equal(atomic_load(&runs), 1);
	warren_worker_get_stats(w, &st);
	assert_int_equal(st.unauthenticated, 3);
	raw_purge(r, "rpc.secure.dlq");
	raw_close(r);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(plain);
	warren_config_free(intruder);
	warren_config_free(app);
}

/* A request of secure.echo as a foreign caller would publish it. */
struct raw_req {
	const char *corr, *msgid;
	const char *reply_to;    /* NULL: one-way */
	const char *key_id;      /* signs with app's mac secret under this id; NULL: "app" */
	bool unsigned_;          /* no signature headers at all */
	int64_t signed_at;       /* 0: now */
	int64_t deadline;        /* 0: none */
	const char *signed_body; /* NULL: "{}" */
	const char *sent_body;   /* NULL: signed_body */
	int attempt;             /* 0: 1 */
};

static void raw_request(struct raw *r, const struct raw_req *q)
{
	struct envelope_meta m = {.format = ENVELOPE_FMT_JSON,
	                          .attempt = q->attempt > 0 ? q->attempt : 1,
	                          .deadline_ms = q->deadline,
	                          .persistent = true};
	const char *key_id = q->key_id != NULL ? q->key_id : "app";
	const char *signed_body = q->signed_body != NULL ? q->signed_body : "{}";
	const char *sent_body = q->sent_body != NULL ? q->sent_body : signed_body;
	int64_t at = q->signed_at != 0 ? q->signed_at : warren_now_ms();
	struct envelope_props ep;
	struct sign_key k;
	struct sign_fields f;
	unsigned char sig[SIGN_MAX_SIG];
	size_t len;
	char path[160], why[300];

	snprintf(m.method, sizeof(m.method), "secure.echo");
	snprintf(m.correlation_id, sizeof(m.correlation_id), "%s", q->corr);
	snprintf(m.message_id, sizeof(m.message_id), "%s", q->msgid);
	snprintf(m.reply_to, sizeof(m.reply_to), "%s", q->reply_to != NULL ? q->reply_to : "");
	snprintf(path, sizeof(path), "%s/app.mac", dir);
	assert_int_equal(sign_load_secret(SIGN_MAC, key_id, path, &k, why, sizeof(why)), 0);
	f = (struct sign_fields){.key_id = key_id,
	                         .method = "secure.echo",
	                         .message_id = q->msgid,
	                         .correlation_id = q->corr,
	                         .reply_to = m.reply_to,
	                         .deadline_ms = q->deadline,
	                         .signed_at_ms = at,
	                         .content_type = "application/json",
	                         .body = signed_body,
	                         .body_len = strlen(signed_body)};
	sign_make(SIGN_MAC, &k, &f, sig, &len);
	envelope_request_props(&m, &ep);
	if (!q->unsigned_) {
		envelope_add_signature(&ep, key_id, at, sig, len);
	}
	assert_int_equal(raw_publish(r, "secure.echo", &ep.props, sent_body, strlen(sent_body)), 0);
}

/* Publishes a one-way request signed with app's mac secret, with
 * signed_at and body chosen by the test. */
static void raw_signed_attempt(struct raw *r, const char *corr, const char *msgid,
                               int64_t signed_at, const char *signed_body, const char *sent_body,
                               int attempt)
{
	raw_request(r, &(struct raw_req){.corr = corr,
	                                 .msgid = msgid,
	                                 .signed_at = signed_at,
	                                 .signed_body = signed_body,
	                                 .sent_body = sent_body,
	                                 .attempt = attempt});
}

static void raw_signed(struct raw *r, const char *corr, const char *msgid, int64_t signed_at,
                       const char *signed_body, const char *sent_body)
{
	raw_signed_attempt(r, corr, msgid, signed_at, signed_body, sent_body, 1);
}

/* Waits (up to 5 s) until the worker has acknowledged n requests: by then
 * whatever it published for them, dead letters and replies, is confirmed. */
static void await_acked(warren_worker *w, uint64_t n, warren_worker_stats *st)
{
	for (int i = 0; i < 250; i++) {
		warren_worker_get_stats(w, st);
		if (st->acked >= n) {
			break;
		}
		usleep(20000);
	}
	assert_int_equal(st->acked, n);
}

static void test_tampered_stale_and_replayed_requests_do_not_run_twice(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", NULL);
	warren_worker *w = start_worker(wc);
	struct raw *r = raw_connect();
	warren_worker_stats st;
	int64_t at = warren_now_ms();

	atomic_store(&runs, 0);
	raw_purge(r, "rpc.secure.dlq");
	/* One-way requests (no reply_to): what counts is whether they run. */
	raw_signed(r, "t-good", "m-good", at, "{\"a\":1}", "{\"a\":1}");
	raw_signed(r, "t-tamper", "m-tamper", warren_now_ms(), "{\"a\":1}", "{\"a\":2}");
	raw_signed(r, "t-stale", "m-stale", warren_now_ms() - 600000, "{}", "{}");
	/* The same signed message again: a replay. */
	raw_signed(r, "t-good", "m-good", at, "{\"a\":1}", "{\"a\":1}");
	/* Replayed as if a worker retried it: no retry token, refused. */
	raw_signed_attempt(r, "t-good", "m-good", at, "{\"a\":1}", "{\"a\":1}", 2);
	await_acked(w, 5, &st);
	assert_int_equal(raw_queue_count(r, "rpc.secure.dlq"), 3);
	assert_int_equal(atomic_load(&runs), 1);
	assert_int_equal(st.unauthenticated, 3);
	assert_int_equal(st.replays, 1);
	raw_purge(r, "rpc.secure.dlq");
	raw_close(r);
	warren_worker_free(w);
	warren_config_free(wc);
}

/* A caller's republish of a request (after a lost connection or a
 * return, issue 16) carries the same correlation id, message id and
 * rpc-attempt 1, signed afresh: a new signature, so the replay filter,
 * which keys on the signature, lets it through. The worker's reply cache
 * answers it: the handler runs once. With the cache off
 * (worker.reply_cache_size 0) the same two copies run twice, which is
 * what the cache is for. */
static int republished_runs(const char *cache_size, warren_worker_stats *st)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", NULL);
	warren_worker *w;
	struct raw *r = raw_connect();
	int64_t at = warren_now_ms();

	assert_int_equal(warren_config_set(wc, "worker.reply_cache_size", cache_size, NULL, 0),
	                 WARREN_OK);
	w = start_worker(wc);
	atomic_store(&runs, 0);
	raw_signed(r, "t-re", "m-re", at, "{\"a\":1}", "{\"a\":1}");
	raw_signed(r, "t-re", "m-re", at + 5, "{\"a\":1}", "{\"a\":1}"); /* re-signed */
	await_acked(w, 2, st);
	raw_close(r);
	warren_worker_free(w);
	warren_config_free(wc);
	return atomic_load(&runs);
}

static void test_a_republish_signed_afresh_is_answered_from_the_reply_cache(void **state)
{
	warren_worker_stats st;

	assert_int_equal(republished_runs("10000", &st), 1);
	assert_int_equal(st.replays, 0);
	assert_int_equal(st.unauthenticated, 0);
	assert_int_equal(st.reply_cache_hits, 1);
	assert_int_equal(republished_runs("0", &st), 2);
	assert_int_equal(st.replays, 0);
	assert_int_equal(st.reply_cache_hits, 0);
}

/* A reply the caller cannot verify is not known to come from the service:
 * it is ignored and counted, and the call waits on (here, to its deadline:
 * no other reply comes). It used to end the call with DECODE, which let
 * anyone who can publish to the reply path end a live call. */
static void test_a_caller_ignores_a_reply_it_cannot_verify(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", NULL);
	/* The caller's keyring lacks the service's key. */
	warren_config *cc = side("mac", "app", "app.mac", "mac-svc", NULL);
	warren_worker *w = start_worker(wc);
	warren_client *c = start_client(cc);
	warren_client_stats st;
	warren_reply *reply = NULL;
	char why[300];

	atomic_store(&runs, 0);
	assert_int_equal(warren_call(c, "secure.echo", NULL,
	                             &(warren_call_opts){.timeout_ms = 1500}, &reply, why,
	                             sizeof(why)),
	                 WARREN_ERR_TIMEOUT);
	assert_null(reply);
	assert_string_equal(why, "no reply within 1500 ms");
	assert_int_equal(atomic_load(&runs), 1);
	warren_client_get_stats(c, &st);
	assert_int_equal(st.untrusted_replies, 1);
	assert_int_equal(st.timeouts, 1);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(cc);
}

static void test_a_key_file_others_can_read_is_refused(void **state)
{
	warren_config *cfg;
	warren_worker *w = NULL;
	char path[160], why[300], want[300];

	snprintf(path, sizeof(path), "%s/app.mac", dir);
	chmod(path, 0640);
	cfg = side("mac", "app", "app.mac", "mac-svc", NULL);
	assert_int_equal(warren_worker_new(cfg, &w, why, sizeof(why)), WARREN_ERR_CONFIG);
	snprintf(want, sizeof(want),
	         "security.key_file: %s may be read by others (mode 0640): chmod 600 it", path);
	assert_string_equal(why, want);
	chmod(path, 0600);
	warren_config_free(cfg);
}

/* ------------------------------------------------------- encrypted bodies */

static const char secret_params[] = "{\"email\":\"ada@example.org\"}";

/* An encrypted call of secure.echo with secret_params comes back intact. */
static void encrypted_calls_work(const char *scheme, const char *svc_key, const char *svc_ring,
                                 const char *app_key, const char *app_ring, const char *encrypt)
{
	warren_config *wc = side_enc(scheme, "svc", svc_key, svc_ring, NULL, "secure.*");
	warren_config *cc = side_enc(scheme, "app", app_key, app_ring, NULL, encrypt);
	warren_worker *w = start_worker(wc);
	warren_client *c = start_client(cc);
	warren_value *params = NULL;
	warren_reply *reply = NULL;
	char why[300] = "", *json = NULL;

	atomic_store(&runs, 0);
	assert_int_equal(
	    warren_value_from_json(secret_params, strlen(secret_params), &params, why, sizeof(why)),
	    WARREN_OK);
	assert_int_equal(warren_call(c, "secure.echo", params, &(warren_call_opts){.json = true},
	                             &reply, why, sizeof(why)),
	                 WARREN_OK);
	assert_int_equal(warren_value_to_json(warren_reply_result(reply), &json, why, sizeof(why)),
	                 WARREN_OK);
	assert_string_equal(json, secret_params);
	assert_int_equal(atomic_load(&runs), 1);
	free(json);
	warren_reply_free(reply);
	warren_value_free(params);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(cc);
}

static void test_an_encrypted_call_is_answered_with_mac(void **state)
{
	encrypted_calls_work("mac", "svc.mac", "mac-svc", "app.mac", "mac-app", "secure.*");
}

static void test_an_encrypted_call_is_answered_with_ed25519(void **state)
{
	encrypted_calls_work("ed25519", "svc.ed", "ed-svc", "app.ed", "ed-app", "secure.*=svc");
}

/* A worker decodes a request's params in place: a binary value points
 * into the request's body, for an encrypted request the opened body, which
 * must live as long as the handler (job.c frees it after the handler). A
 * 64 KiB binary encrypted comes back intact. */
static void test_an_encrypted_binary_param_reaches_the_handler_intact(void **state)
{
	warren_config *wc = side_enc("mac", "svc", "svc.mac", "mac-svc", NULL, "secure.*");
	warren_config *cc = side_enc("mac", "app", "app.mac", "mac-app", NULL, "secure.*");
	warren_worker *w = start_worker(wc);
	warren_client *c = start_client(cc);
	warren_value *params = warren_map();
	warren_reply *reply = NULL;
	size_t n = 65536;
	unsigned char *blob = malloc(n);
	char why[300] = "";

	for (size_t i = 0; i < n; i++) {
		blob[i] = (unsigned char)(i * 13 + 1);
	}
	warren_map_set(params, "blob", warren_bin(blob, n));
	warren_map_set(params, "tag", warren_str("intact"));
	atomic_store(&runs, 0);
	assert_int_equal(warren_call(c, "secure.echo", params, NULL, &reply, why, sizeof(why)),
	                 WARREN_OK);
	assert_int_equal(warren_reply_status(reply), WARREN_STATUS_OK);
	assert_true(warren_value_equal(warren_reply_result(reply), params));
	assert_int_equal(atomic_load(&runs), 1);
	warren_reply_free(reply);
	warren_value_free(params);
	free(blob);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(cc);
}

/* Publishes secure.echo with secret_params as app would (ed25519), sealed
 * with key (NULL: unsealed), replies to the raw channel. */
static void raw_sealed(struct raw *r, struct security *app, const char *corr,
                       const unsigned char *key)
{
	struct envelope_meta m = {.format = ENVELOPE_FMT_JSON, .attempt = 1, .persistent = true};
	struct envelope_props ep;
	struct signature sig;
	const void *body = secret_params;
	void *sealed = NULL;
	size_t len = strlen(secret_params);

	snprintf(m.method, sizeof(m.method), "secure.echo");
	snprintf(m.correlation_id, sizeof(m.correlation_id), "%s", corr);
	snprintf(m.message_id, sizeof(m.message_id), "m-%s", corr);
	snprintf(m.reply_to, sizeof(m.reply_to), "%s", WIRE_DIRECT_REPLY_TO);
	if (key != NULL) {
		assert_int_equal(seal_body(key, body, len, &sealed, &len), 0);
		body = sealed;
		m.sealed = true;
	}
	security_sign_request(app, &m, body, len, &sig);
	envelope_request_props(&m, &ep);
	envelope_add_signature(&ep, sig.key_id, sig.signed_at_ms, sig.sig, sig.len);
	assert_int_equal(raw_publish(r, "secure.echo", &ep.props, body, len), 0);
	free(sealed);
}

static struct security *load_security(warren_config *cfg)
{
	struct security *s = NULL;
	char why[300] = "";

	assert_int_equal(security_load(cfg, &s, why, sizeof(why)), 0);
	assert_non_null(s);
	return s;
}

static bool has_secret(const amqp_bytes_t *body)
{
	return memmem(body->bytes, body->len, "ada@example.org", 15) != NULL;
}

static bool is_sealed(const amqp_basic_properties_t *p)
{
	return (p->_flags & AMQP_BASIC_CONTENT_ENCODING_FLAG) &&
	       p->content_encoding.len == strlen(SEAL_ENCODING) &&
	       memcmp(p->content_encoding.bytes, SEAL_ENCODING, strlen(SEAL_ENCODING)) == 0;
}

/* What the broker holds of an encrypted call, both ways, has no trace of
 * the body: the request (seen by taking it from the queue with no worker
 * running) and the reply (to a raw caller, who opens it with the key it
 * shares with the service). */
static void test_encrypted_bodies_are_unreadable_on_the_broker(void **state)
{
	warren_config *wc = side_enc("ed25519", "svc", "svc.ed", "ed-svc", NULL, "secure.*");
	warren_config *cc = side_enc("ed25519", "app", "app.ed", "ed-app", NULL, "secure.*=svc");
	struct security *app = load_security(cc);
	const unsigned char *key = NULL;
	const char *to = NULL;
	warren_worker *w;
	warren_client *c = start_client(cc);
	struct raw *r = raw_connect();
	warren_value *params = NULL;
	amqp_message_t msg;
	amqp_envelope_t env;
	void *opened = NULL;
	size_t len = 0;
	char why[300];

	/* The request, as it waits in the service's queue. */
	raw_purge(r, "rpc.secure");
	assert_int_equal(
	    warren_value_from_json(secret_params, strlen(secret_params), &params, why, sizeof(why)),
	    WARREN_OK);
	assert_int_equal(warren_send(c, "secure.echo", params, NULL, why, sizeof(why)), WARREN_OK);
	assert_int_equal(raw_get(r, "rpc.secure", &msg), 0);
	assert_true(is_sealed(&msg.properties));
	assert_false(has_secret(&msg.body));
	assert_int_equal(security_request_key(app, "secure.echo", &key, &to), 0);
	assert_string_equal(to, "svc");
	assert_non_null(key);
	assert_int_equal(seal_open(key, msg.body.bytes, msg.body.len, &opened, &len), 0);
	assert_non_null(memmem(opened, len, "ada@example.org", 15));
	free(opened);
	amqp_destroy_message(&msg);

	/* The reply, as the worker sends it. */
	w = start_worker(wc);
	assert_int_equal(raw_consume_replies(r), 0);
	raw_sealed(r, app, "t-sealed-reply", key);
	assert_int_equal(raw_wait(r, 5000, &env), 0);
	assert_string_equal(raw_header(&env.message.properties, "rpc-status"), "0");
	assert_true(is_sealed(&env.message.properties));
	assert_false(has_secret(&env.message.body));
	assert_int_equal(
	    seal_open(key, env.message.body.bytes, env.message.body.len, &opened, &len), 0);
	assert_int_equal(len, strlen(secret_params));
	assert_memory_equal(opened, secret_params, len);
	free(opened);
	amqp_destroy_envelope(&env);

	raw_close(r);
	warren_value_free(params);
	warren_client_free(c);
	warren_worker_free(w);
	security_free(app);
	warren_config_free(wc);
	warren_config_free(cc);
}

/* The answer of the worker to a raw request: its status and message. */
static void raw_answer(struct raw *r, const char *status, const char *message)
{
	amqp_envelope_t env;

	assert_int_equal(raw_wait(r, 5000, &env), 0);
	assert_string_equal(raw_header(&env.message.properties, "rpc-status"), status);
	assert_false(is_sealed(&env.message.properties));
	assert_non_null(
	    memmem(env.message.body.bytes, env.message.body.len, message, strlen(message)));
	amqp_destroy_envelope(&env);
}

/* Refused, never run: a request for an encrypted method in the clear, one
 * sealed with a key the worker does not share with its signer, and a
 * sealed one to a worker without keys. */
static void test_encryption_refusals_never_run_the_handler(void **state)
{
	warren_config *wc = side_enc("ed25519", "svc", "svc.ed", "ed-svc", NULL, "secure.*");
	warren_config *cc = side("ed25519", "app", "app.ed", "ed-app", NULL);
	warren_config *plain =
	    testenv_config((const char *const[]){"worker.service=secure", "log.level=error", NULL});
	struct security *app = load_security(cc);
	unsigned char other[SEAL_KEY_BYTES];
	warren_worker *w = start_worker(wc);
	warren_client *c = start_client(cc);
	struct raw *r = raw_connect();
	char why[300];

	atomic_store(&runs, 0);
	assert_int_equal(call(c, "secure.echo", why, sizeof(why)), WARREN_STATUS_PERMISSION_DENIED);
	assert_string_equal(why, "secure.echo must be encrypted (security.encrypt)");

	assert_int_equal(raw_consume_replies(r), 0);
	crypto_secretbox_keygen(other);
	raw_sealed(r, app, "t-other-key", other);
	raw_answer(r, "16", "the body cannot be decrypted with the key shared with \\\"app\\\"");
	warren_worker_free(w);

	w = start_worker(plain);
	raw_sealed(r, app, "t-no-keys", other);
	raw_answer(r, "3",
	           "the body is encrypted (x-warren-sealed) and this worker has no keys "
	           "(security.scheme is none)");
	assert_int_equal(atomic_load(&runs), 0);
	raw_purge(r, "rpc.secure.dlq");
	raw_close(r);
	warren_client_free(c);
	warren_worker_free(w);
	security_free(app);
	warren_config_free(wc);
	warren_config_free(cc);
	warren_config_free(plain);
}

/* An echo of secret_params by c: its status (-1: a local error, in why). */
static int call_secret(warren_client *c, char *why, size_t len)
{
	warren_value *params = NULL;
	warren_reply *reply = NULL;
	int status = -1;

	assert_int_equal(
	    warren_value_from_json(secret_params, strlen(secret_params), &params, why, len),
	    WARREN_OK);
	if (warren_call(c, "secure.echo", params, NULL, &reply, why, len) != WARREN_ERR_TIMEOUT &&
	    reply != NULL) {
		status = (int)warren_reply_status(reply);
		snprintf(why, len, "%s", warren_reply_message(reply));
	}
	warren_reply_free(reply);
	warren_value_free(params);
	return status;
}

/* A service changing its Ed25519 key: its workers hold the new key, and
 * the old one as security.retiring_key_*, so that callers encrypting to
 * either are answered; a worker without the old key refuses what is
 * encrypted to it. The retiring key's configuration errors. */
static void test_a_service_key_change_keeps_encrypted_calls_working(void **state)
{
	warren_config *wc = side_enc("ed25519", "svc2", "svc2.ed", "ed-svc", NULL, "secure.*");
	warren_config *plain_wc = side_enc("ed25519", "svc2", "svc2.ed", "ed-svc", NULL, "secure.*");
	warren_config *old = side_enc("ed25519", "app", "app.ed", "ed-app2", NULL, "secure.*=svc");
	warren_config *new = side_enc("ed25519", "app", "app.ed", "ed-app2", NULL, "secure.*=svc2");
	warren_config *bad = side_enc("mac", "app", "app.mac", "mac-app", NULL, NULL);
	warren_worker *w;
	warren_client *c = NULL;
	char path[160], why[300] = "";

	snprintf(path, sizeof(path), "%s/svc.ed", dir);
	assert_int_equal(warren_config_set(wc, "security.retiring_key_id", "svc", why, sizeof(why)),
	                 WARREN_OK);
	assert_int_equal(
	    warren_config_set(wc, "security.retiring_key_file", path, why, sizeof(why)), WARREN_OK);
	w = start_worker(wc);
	atomic_store(&runs, 0);
	for (warren_config *const *cc = (warren_config *const[]){old, new, NULL}; *cc != NULL; cc++) {
		c = start_client(*cc);
		assert_int_equal(call_secret(c, why, sizeof(why)), WARREN_STATUS_OK);
		warren_client_free(c);
	}
	assert_int_equal(atomic_load(&runs), 2);
	warren_worker_free(w);

	/* The change is over: the old key is gone from the workers. */
	w = start_worker(plain_wc);
	c = start_client(old);
	assert_int_equal(call_secret(c, why, sizeof(why)), WARREN_STATUS_UNAUTHENTICATED);
	assert_string_equal(
	    why, "the body is encrypted to key \"svc\", which this worker does not hold");
	warren_client_free(c);
	warren_worker_free(w);

	assert_int_equal(
	    warren_config_set(bad, "security.retiring_key_id", "svc", why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_client_new(bad, "it_sign", &c, why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(why,
	                    "security.retiring_key_file: only with security.scheme ed25519 (with "
	                    "mac, the keyring holds the secrets that open bodies)");
	assert_int_equal(
	    warren_config_set(new, "security.retiring_key_id", "svc", why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_client_new(new, "it_sign", &c, why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(why,
	                    "security.retiring_key_file: needed with security.retiring_key_id");
	{
		struct raw *r = raw_connect();
		raw_purge(r, "rpc.secure.dlq");
		raw_close(r);
	}
	warren_config_free(wc);
	warren_config_free(plain_wc);
	warren_config_free(old);
	warren_config_free(new);
	warren_config_free(bad);
}

/* A rogue responder on the broker: answers a request taken from queue
 * it_sign.rogue with an OK reply whose body is the msgpack text (msgpack,
 * mlen bytes), in the clear or sealed with key, signed under the id "svc"
 * with the mac secret in DIR/secret ("svc.mac": the service's own, so that
 * the signature passes; another: a forgery; NULL: unsigned). */
static void rogue_reply_as(struct raw *r, const amqp_message_t *req, const unsigned char *key,
                           const char *secret, const char *msgpack, size_t mlen)
{
	struct envelope_meta m = {.format = ENVELOPE_FMT_MSGPACK, .status = 0};
	struct envelope_props ep;
	struct sign_key svc;
	struct sign_fields f;
	unsigned char sig[SIGN_MAX_SIG];
	char path[160], why[300], reply_to[256];
	void *body = NULL;
	size_t len = mlen, siglen = 0;

	envelope_copy(m.correlation_id, sizeof(m.correlation_id), req->properties.correlation_id);
	envelope_copy(reply_to, sizeof(reply_to), req->properties.reply_to);
	if (key != NULL) {
		assert_int_equal(seal_body(key, msgpack, mlen, &body, &len), 0);
		m.sealed = true;
	}
	f = (struct sign_fields){.key_id = "svc",
	                         .reply = true,
	                         .message_id = "",
	                         .correlation_id = m.correlation_id,
	                         .reply_to = "",
	                         .signed_at_ms = warren_now_ms(),
	                         .content_type = ENVELOPE_MSGPACK,
	                         .content_encoding = key != NULL ? SEAL_ENCODING : "",
	                         .body = key != NULL ? body : msgpack,
	                         .body_len = len};
	envelope_reply_props(&m, &ep);
	if (secret != NULL) {
		snprintf(path, sizeof(path), "%s/%s", dir, secret);
		assert_int_equal(sign_load_secret(SIGN_MAC, "svc", path, &svc, why, sizeof(why)),
		                 0);
		sign_make(SIGN_MAC, &svc, &f, sig, &siglen);
		envelope_add_signature(&ep, "svc", f.signed_at_ms, sig, siglen);
	}
	assert_int_equal(amqp_basic_publish(raw_conn(r), 1, amqp_empty_bytes,
	                                    amqp_cstring_bytes(reply_to), 0, 0, &ep.props,
	                                    (amqp_bytes_t){len, (void *)f.body}),
	                 AMQP_STATUS_OK);
	free(body);
}

/* As the service would answer (signed with its key), with a nil body. */
static void rogue_reply(struct raw *r, const amqp_message_t *req, const unsigned char *key)
{
	rogue_reply_as(r, req, key, "svc.mac", "\xc0", 1);
}

/* Declares it_sign.rogue, bound to rpc with rogue.#: what a rogue
 * responder answers. Exclusive: gone with the raw connection. */
static void rogue_queue(struct raw *r)
{
	assert_non_null(amqp_queue_declare(raw_conn(r), 1, amqp_cstring_bytes("it_sign.rogue"), 0,
	                                   0, 1, 0, amqp_empty_table));
	assert_non_null(amqp_queue_bind(raw_conn(r), 1, amqp_cstring_bytes("it_sign.rogue"),
	                                amqp_cstring_bytes("rpc"), amqp_cstring_bytes("rogue.#"),
	                                amqp_empty_table));
}

/* Takes the next request from it_sign.rogue into *req, waiting up to 5 s. */
static void rogue_take(struct raw *r, amqp_message_t *req)
{
	int got = -1;

	for (int t = 0; t < 250 && got != 0; t++) {
		got = raw_get(r, "it_sign.rogue", req);
		if (got != 0) {
			usleep(20000);
		}
	}
	assert_int_equal(got, 0);
}

struct outcome {
	atomic_int done;
	warren_err err;
	char msg[300];
	char result[64]; /* the reply's result, when it is text */
};

static void on_outcome(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct outcome *o = arg;

	o->err = err;
	snprintf(o->msg, sizeof(o->msg), "%s", msg);
	warren_reply_free(reply);
	atomic_store(&o->done, 1);
}

/* on_outcome, keeping the reply's text result. */
static void on_outcome_result(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct outcome *o = arg;
	const char *text = NULL;
	size_t len = 0;

	if (reply != NULL && warren_value_get_str(warren_reply_result(reply), &text, &len)) {
		snprintf(o->result, sizeof(o->result), "%.*s", (int)len, text);
	}
	on_outcome(err, reply, msg, arg);
}

/* A caller takes from an encrypted call only a sealed reply that opens
 * with its key (or an error in the clear), and from a clear call only a
 * clear one: what a rogue responder sends otherwise is refused. */
static void test_a_caller_refuses_replies_that_break_its_encryption(void **state)
{
	warren_config *cc = side_enc("mac", "app", "app.mac", "mac-app", NULL, "rogue.sealed*");
	warren_client *c = start_client(cc);
	struct raw *r = raw_connect();
	unsigned char other[SEAL_KEY_BYTES];
	const char *methods[] = {"rogue.sealed_clear", "rogue.sealed_foreign", "rogue.plain"};
	const char *want[] = {
	    "the reply is in the clear but its request was encrypted (security.encrypt)",
	    "the reply cannot be decrypted with the service's key",
	    "the reply is encrypted but its request was not"};
	struct outcome out[3] = {0};
	amqp_message_t req[3];
	struct security *app = load_security(cc);
	const unsigned char *key = NULL;
	const char *to = NULL;
	warren_client_stats st = {0};

	crypto_secretbox_keygen(other);
	assert_int_equal(security_request_key(app, "rogue.sealed_foreign", &key, &to), 0);
	assert_non_null(key);
	rogue_queue(r);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(warren_call_async(c, methods[i], NULL,
		                                   &(warren_call_opts){.timeout_ms = 10000}, on_outcome,
		                                   &out[i], NULL, 0),
		                 WARREN_OK);
		/* One at a time, so that they come off the queue in this order. */
		rogue_take(r, &req[i]);
	}
	/* Only publishes from here: no other command shares the channel with
	 * their confirms. */
	rogue_reply(r, &req[0], NULL);
	rogue_reply(r, &req[1], other);
	rogue_reply(r, &req[2], other);
	/* The signature of these replies verifies (the rogue holds the
	 * service's key): a clear reply to a sealed call and a sealed one to a
	 * clear call are the service breaking security.encrypt, and end the
	 * call. */
	for (int i = 0; i < 3; i += 2) {
		for (int t = 0; t < 250 && !atomic_load(&out[i].done); t++) {
			usleep(20000);
		}
		assert_int_equal(atomic_load(&out[i].done), 1);
		assert_int_equal(out[i].err, WARREN_ERR_DECODE);
		assert_string_equal(out[i].msg, want[i]);
	}
	/* A sealed body that does not open fails the box's authentication: not
	 * from the service, so ignored, counted, and the call takes the real
	 * reply that follows. */
	for (int t = 0; t < 250; t++) {
		warren_client_get_stats(c, &st);
		if (st.untrusted_replies == 1) {
			break;
		}
		usleep(20000);
	}
	assert_int_equal(st.untrusted_replies, 1);
	assert_int_equal(atomic_load(&out[1].done), 0);
	rogue_reply(r, &req[1], key);
	for (int t = 0; t < 250 && !atomic_load(&out[1].done); t++) {
		usleep(20000);
	}
	assert_int_equal(atomic_load(&out[1].done), 1);
	assert_int_equal(out[1].err, WARREN_OK);
	warren_client_get_stats(c, &st);
	assert_int_equal(st.untrusted_replies, 1);
	for (int i = 0; i < 3; i++) {
		amqp_destroy_message(&req[i]);
	}
	warren_client_free(c);
	security_free(app);
	raw_close(r);
	warren_config_free(cc);
}

/* msgpack texts "forged" and "real" (fixstr: 0xa0 + length). */
static const char forged_text[] = "\246forged", real_text[] = "\244real";

/* A forged reply (unsigned, or signed with a key that is not the
 * service's) comes first with the live correlation id: the caller ignores
 * it, counts it, and ends the call with the real reply that follows. */
static void test_a_forged_reply_does_not_end_the_call(void **state)
{
	warren_config *cc = side("mac", "app", "app.mac", "mac-app", NULL);
	warren_client *c = start_client(cc);
	struct raw *r = raw_connect();
	const char *forgers[] = {NULL, "ops.mac"}; /* unsigned; another key as "svc" */
	warren_client_stats st;

	struct outcome out[2] = {0};
	amqp_message_t req[2];

	rogue_queue(r);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(warren_call_async(c, "rogue.get", NULL,
		                                   &(warren_call_opts){.timeout_ms = 10000},
		                                   on_outcome_result, &out[i], NULL, 0),
		                 WARREN_OK);
		rogue_take(r, &req[i]);
	}
	/* Only publishes from here (see above). */
	for (int i = 0; i < 2; i++) {
		rogue_reply_as(r, &req[i], NULL, forgers[i], forged_text, 7);
		for (int t = 0; t < 250; t++) {
			warren_client_get_stats(c, &st);
			if (st.untrusted_replies == (uint64_t)i + 1) {
				break;
			}
			usleep(20000);
		}
		assert_int_equal(st.untrusted_replies, i + 1);
		assert_int_equal(atomic_load(&out[i].done), 0);
		rogue_reply_as(r, &req[i], NULL, "svc.mac", real_text, 5);
		for (int t = 0; t < 250 && !atomic_load(&out[i].done); t++) {
			usleep(20000);
		}
		assert_int_equal(atomic_load(&out[i].done), 1);
		assert_int_equal(out[i].err, WARREN_OK);
		assert_string_equal(out[i].result, "real");
		amqp_destroy_message(&req[i]);
	}
	warren_client_get_stats(c, &st);
	assert_int_equal(st.untrusted_replies, 2);
	assert_int_equal(st.replies, 2);
	warren_client_free(c);
	raw_close(r);
	warren_config_free(cc);
}

/* A client is not started with a security.encrypt it cannot follow. */
static void test_a_client_refuses_an_encrypt_list_it_cannot_follow(void **state)
{
	struct {
		const char *scheme, *encrypt, *want;
	} cases[] = {
	    {"ed25519", "secure.*",
	     "security.encrypt: \"secure.*\": with ed25519 each entry is METHOD=ID, ID the "
	     "service's key in security.keyring"},
	    {"ed25519", "user.*=svc, secure.*=nokey",
	     "security.encrypt: no key \"nokey\" in %s/ed-app"},
	    {"none", "secure.*",
	     "security.encrypt: needs security.scheme mac or ed25519 (the keys that encrypt are "
	     "those that sign)"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		warren_config *cc =
		    side_enc(cases[i].scheme, "app", "app.ed", "ed-app", NULL, cases[i].encrypt);
		warren_client *c = NULL;
		char why[300] = "", want[300];

		snprintf(want, sizeof(want), cases[i].want, dir);
		assert_int_equal(warren_client_new(cc, "it_sign", &c, why, sizeof(why)),
		                 WARREN_ERR_CONFIG);
		assert_string_equal(why, want);
		warren_config_free(cc);
	}
}

/* A caller that retries a call under the same message id, the idempotent
 * pattern of warren(7), makes a new call: it is answered, not taken for a
 * replay of the first; from the worker's reply cache, its handler not run
 * again (issue 16: the same signer, the same message id). */
static void test_a_retry_under_the_same_message_id_is_answered(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", NULL);
	warren_config *cc = side("mac", "app", "app.mac", "mac-app", NULL);
	warren_worker *w = start_worker(wc);
	warren_client *c = start_client(cc);
	warren_worker_stats st;

	atomic_store(&runs, 0);
	for (int i = 0; i < 2; i++) {
		warren_reply *reply = NULL;
		char why[300] = "";

		assert_int_equal(
		    warren_call(c, "secure.echo", NULL,
		                &(warren_call_opts){.timeout_ms = 5000, .message_id = "order-7"},
		                &reply, why, sizeof(why)),
		    WARREN_OK);
		assert_int_equal(warren_reply_status(reply), WARREN_STATUS_OK);
		warren_reply_free(reply);
	}
	assert_int_equal(atomic_load(&runs), 1);
	warren_worker_get_stats(w, &st);
	assert_int_equal(st.replays, 0);
	assert_int_equal(st.reply_cache_hits, 1);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(cc);
}

/* A signed request whose deadline passed while it waited is dropped as
 * expired, even when its signature has also left security.window since:
 * it is not poison. */
static void test_an_expired_request_is_dropped_before_its_signature_is_checked(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", NULL);
	warren_worker *w = start_worker(wc);
	struct raw *r = raw_connect();
	int64_t now = warren_now_ms();
	warren_worker_stats st;

	atomic_store(&runs, 0);
	raw_purge(r, "rpc.secure.dlq");
	/* Signed ten minutes ago with a deadline a minute later: it waited
	 * in a backlog longer than security.window (5m). */
	raw_request(r, &(struct raw_req){.corr = "t-backlog",
	                                 .msgid = "m-backlog",
	                                 .reply_to = "it_sign.nobody",
	                                 .signed_at = now - 600000,
	                                 .deadline = now - 540000});
	await_acked(w, 1, &st);
	assert_int_equal(st.expired, 1);
	assert_int_equal(st.unauthenticated, 0);
	assert_int_equal(st.dead_lettered, 0);
	assert_int_equal(raw_queue_count(r, "rpc.secure.dlq"), 0);
	assert_int_equal(atomic_load(&runs), 0);
	raw_close(r);
	warren_worker_free(w);
	warren_config_free(wc);
}

/* A signed request whose rpc-deadline is a string: it cannot even be read,
 * let alone authenticated. */
static void raw_bad_envelope(struct raw *r, const char *corr, const char *reply_to)
{
	struct envelope_meta m = {.format = ENVELOPE_FMT_JSON, .attempt = 1, .persistent = true};
	struct envelope_props ep;
	int n;

	snprintf(m.method, sizeof(m.method), "secure.echo");
	snprintf(m.correlation_id, sizeof(m.correlation_id), "%s", corr);
	snprintf(m.reply_to, sizeof(m.reply_to), "%s", reply_to);
	envelope_request_props(&m, &ep);
	n = ep.props.headers.num_entries++;
	ep.headers[n].key = amqp_cstring_bytes("rpc-deadline");
	ep.headers[n].value.kind = AMQP_FIELD_KIND_UTF8;
	ep.headers[n].value.value.bytes = amqp_cstring_bytes("soon");
	assert_int_equal(raw_publish(r, "secure.echo", &ep.props, "{}", 2), 0);
}

/* A request whose signature does not verify names a reply_to and a
 * correlation id nobody vouches for: the worker dead-letters it with its
 * reason and answers nothing, so that it never signs an answer for an
 * attacker nor publishes into a queue of the attacker's choosing. So is
 * one whose envelope cannot be read, with signing on. */
static void test_a_request_that_fails_authentication_gets_no_reply(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", NULL);
	warren_worker *w = start_worker(wc);
	struct raw *r = raw_connect();
	warren_worker_stats st;
	int64_t now = warren_now_ms();

	atomic_store(&runs, 0);
	raw_purge(r, "rpc.secure.dlq");
	/* The queue an attacker wants the worker to write into. Not exclusive:
	 * the broker refuses other connections' publishes to an exclusive one. */
	assert_non_null(amqp_queue_declare(raw_conn(r), 1, amqp_cstring_bytes("it_sign.victim"), 0,
	                                   0, 0, 0, amqp_empty_table));
	raw_purge(r, "it_sign.victim");
	raw_request(r, &(struct raw_req){.corr = "t-unsigned",
	                                 .msgid = "m-1",
	                                 .reply_to = "it_sign.victim",
	                                 .unsigned_ = true});
	raw_request(r, &(struct raw_req){.corr = "t-forged",
	                                 .msgid = "m-2",
	                                 .reply_to = "it_sign.victim",
	                                 .signed_body = "{\"a\":1}",
	                                 .sent_body = "{\"a\":2}"});
	raw_request(r, &(struct raw_req){.corr = "t-unknown",
	                                 .msgid = "m-3",
	                                 .reply_to = "it_sign.victim",
	                                 .key_id = "intruder"});
	raw_request(r, &(struct raw_req){.corr = "t-stale",
	                                 .msgid = "m-4",
	                                 .reply_to = "it_sign.victim",
	                                 .signed_at = now - 600000});
	raw_bad_envelope(r, "t-envelope", "it_sign.victim");
	await_acked(w, 5, &st);
	assert_int_equal(st.unauthenticated, 4);
	assert_int_equal(st.dead_lettered, 5);
	assert_int_equal(raw_queue_count(r, "it_sign.victim"), 0);
	assert_int_equal(raw_queue_count(r, "rpc.secure.dlq"), 5);
	assert_dead_letters(
	    r, 5,
	    (const char *const[][2]){
	        {"bad-signature", "not signed (security.scheme is mac)"},
	        {"bad-signature", "bad signature for key \"app\""},
	        {"bad-signature", "unknown key \"intruder\""},
	        {"bad-signature", NULL},
	        {"bad-envelope", "header rpc-deadline: expected an integer, got a string"}});
	assert_int_equal(atomic_load(&runs), 0);
	raw_purge(r, "rpc.secure.dlq");
	assert_non_null(
	    amqp_queue_delete(raw_conn(r), 1, amqp_cstring_bytes("it_sign.victim"), 0, 0));
	raw_close(r);
	warren_worker_free(w);
	warren_config_free(wc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_signed_call_is_answered_with_mac),
	    cmocka_unit_test(test_a_signed_call_is_answered_with_ed25519),
	    cmocka_unit_test(test_signed_calls_republished_after_a_return_succeed_with_mac),
	    cmocka_unit_test(test_signed_calls_republished_after_a_return_succeed_with_ed25519),
	    cmocka_unit_test(test_a_signed_call_held_longer_than_the_window_is_answered),
	    cmocka_unit_test(
	        test_signed_calls_republished_after_a_lost_connection_succeed_with_mac),
	    cmocka_unit_test(
	        test_signed_calls_republished_after_a_lost_connection_succeed_with_ed25519),
	    cmocka_unit_test(test_refusals_never_run_the_handler),
	    cmocka_unit_test(test_tampered_stale_and_replayed_requests_do_not_run_twice),
	    cmocka_unit_test(test_a_republish_signed_afresh_is_answered_from_the_reply_cache),
	    cmocka_unit_test(test_a_caller_ignores_a_reply_it_cannot_verify),
	    cmocka_unit_test(test_a_key_file_others_can_read_is_refused),
	    cmocka_unit_test(test_an_encrypted_call_is_answered_with_mac),
	    cmocka_unit_test(test_an_encrypted_call_is_answered_with_ed25519),
	    cmocka_unit_test(test_encrypted_bodies_are_unreadable_on_the_broker),
	    cmocka_unit_test(test_encryption_refusals_never_run_the_handler),
	    cmocka_unit_test(test_an_encrypted_binary_param_reaches_the_handler_intact),
	    cmocka_unit_test(test_a_service_key_change_keeps_encrypted_calls_working),
	    cmocka_unit_test(test_a_caller_refuses_replies_that_break_its_encryption),
	    cmocka_unit_test(test_a_forged_reply_does_not_end_the_call),
	    cmocka_unit_test(test_a_client_refuses_an_encrypt_list_it_cannot_follow),
	    cmocka_unit_test(test_an_expired_request_is_dropped_before_its_signature_is_checked),
	    cmocka_unit_test(test_a_request_that_fails_authentication_gets_no_reply),
	    cmocka_unit_test(test_a_retry_under_the_same_message_id_is_answered),
	};

	return cmocka_run_group_tests_name("sign", tests, setup, teardown);
}
