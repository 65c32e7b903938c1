/* it_sign.c: signed calls against the private broker, for both schemes:
 * a signed call is answered (and its reply signed); an unsigned, badly
 * signed, unknown-key or stale request is never run and answered
 * UNAUTHENTICATED; a key the allow list does not name gets
 * PERMISSION_DENIED; a replayed request runs once; a caller refuses a
 * reply it cannot verify; and what signing costs, measured side by side. */
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

static void put(const char *name, const unsigned char *key, size_t len, mode_t mode)
{
	char path[160], hex[260];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	sign_to_hex(key, len, hex);
	fprintf(f, "%s\n", hex);
	fclose(f);
	chmod(path, mode);
}

/* Keys for both schemes: mac secrets "app" and "ops" shared with the
 * service; ed25519 pairs for "app" and the service "svc". Keyrings:
 * DIR/mac-svc (the service's: app, ops), DIR/mac-app (the caller's: svc),
 * DIR/ed-svc (app's public key), DIR/ed-app (svc's public key). */
static int setup(void **state)
{
	unsigned char k[64], pk[32];
	char path[160];

	snprintf(dir, sizeof(dir), "/tmp/it-sign-%ld", (long)getpid());
	if (sodium_init() < 0 || mkdir(dir, 0700) != 0) {
		return -1;
	}
	for (const char *const *d = (const char *const[]){"mac-svc", "mac-app", "ed-svc", "ed-app",
	                                                  NULL};
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
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

/* A config with the [security] keys for one side. */
static warren_config *side(const char *scheme, const char *id, const char *key,
                           const char *ring, const char *allow)
{
	char k[200], r[200], a[300], i[100], s[100];

	snprintf(s, sizeof(s), "security.scheme=%s", scheme);
	snprintf(i, sizeof(i), "security.key_id=%s", id);
	snprintf(k, sizeof(k), "security.key_file=%s/%s", dir, key);
	snprintf(r, sizeof(r), "security.keyring=%s/%s", dir, ring);
	snprintf(a, sizeof(a), "security.allow=%s", allow != NULL ? allow : "");
	return testenv_config((const char *const[]){"worker.service=secure", s, i, k, r, a,
	                                            "log.level=error", NULL});
}

static warren_worker *start_worker(warren_config *cfg)
{
	warren_worker *w = NULL;
	char why[300] = "";

	assert_int_equal(warren_worker_new(cfg, &w, why, sizeof(why)), WARREN_OK);
	assert_int_equal(warren_worker_handle(w, "secure.echo", echo, NULL), WARREN_OK);
	assert_int_equal(warren_worker_handle(w, "secure.admin", echo, NULL), WARREN_OK);
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

/* Calls method; its status (or -1 with the local error's text in why). */
static int call(warren_client *c, const char *method, char *why, size_t len)
{
	warren_reply *reply = NULL;
	warren_err err = warren_call(c, method, NULL, &(warren_call_opts){.timeout_ms = 5000}, &reply,
	                             why, len);
	int status = -1;

	if (reply != NULL) {
		status = (int)warren_reply_status(reply);
		snprintf(why, len, "%s", warren_reply_message(reply));
	} else if (err == WARREN_OK) {
		status = 0;
	}
	warren_reply_free(reply);
	return status;
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

static void test_refusals_never_run_the_handler(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", "secure.admin=ops,*=app+ops");
	warren_worker *w = start_worker(wc);
	warren_config *plain = testenv_config(NULL);
	warren_config *intruder = side("mac", "intruder", "app.mac", "mac-app", NULL);
	warren_config *app = side("mac", "app", "app.mac", "mac-app", NULL);
	warren_client *c;
	warren_worker_stats st;
	char why[300];

	atomic_store(&runs, 0);
	c = start_client(plain);
	assert_int_equal(call(c, "secure.echo", why, sizeof(why)), WARREN_STATUS_UNAUTHENTICATED);
	assert_string_equal(why, "not signed (security.scheme is mac)");
	warren_client_free(c);

	/* Signed with app's secret but under an id the service does not know. */
	c = start_client(intruder);
	assert_int_equal(call(c, "secure.echo", why, sizeof(why)), WARREN_STATUS_UNAUTHENTICATED);
	assert_string_equal(why, "unknown key \"intruder\"");
	warren_client_free(c);

	c = start_client(app);
	assert_int_equal(call(c, "secure.admin", why, sizeof(why)), WARREN_STATUS_PERMISSION_DENIED);
	assert_string_equal(why, "key \"app\" may not call secure.admin");
	assert_int_equal(call(c, "secure.echo", why, sizeof(why)), WARREN_STATUS_OK);
	warren_client_free(c);

	assert_int_equal(atomic_load(&runs), 1);
	warren_worker_get_stats(w, &st);
	assert_int_equal(st.unauthenticated, 3);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(plain);
	warren_config_free(intruder);
	warren_config_free(app);
}

/* Publishes a request signed with app's mac secret, as a foreign caller
 * would, with signed_at and body chosen by the test. */
static void raw_signed(struct raw *r, const char *corr, const char *msgid, int64_t signed_at,
                       const char *signed_body, const char *sent_body)
{
	struct envelope_meta m = {.format = ENVELOPE_FMT_JSON, .attempt = 1, .persistent = true};
	struct envelope_props ep;
	struct sign_key k;
	struct sign_fields f;
	unsigned char sig[SIGN_MAX_SIG];
	size_t len;
	char path[160], why[300];

	snprintf(m.method, sizeof(m.method), "secure.echo");
	snprintf(m.correlation_id, sizeof(m.correlation_id), "%s", corr);
	snprintf(m.message_id, sizeof(m.message_id), "%s", msgid);
	snprintf(path, sizeof(path), "%s/app.mac", dir);
	assert_int_equal(sign_load_secret(SIGN_MAC, "app", path, &k, why, sizeof(why)), 0);
	f = (struct sign_fields){.key_id = "app",
	                         .method = "secure.echo",
	                         .message_id = msgid,
	                         .correlation_id = corr,
	                         .reply_to = "",
	                         .signed_at_ms = signed_at,
	                         .content_type = "application/json",
	                         .body = signed_body,
	                         .body_len = strlen(signed_body)};
	sign_make(SIGN_MAC, &k, &f, sig, &len);
	envelope_request_props(&m, &ep);
	envelope_add_signature(&ep, "app", signed_at, sig, len);
	assert_int_equal(raw_publish(r, "secure.echo", &ep.props, sent_body, strlen(sent_body)), 0);
}

static void test_tampered_stale_and_replayed_requests_do_not_run_twice(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", NULL);
	warren_worker *w = start_worker(wc);
	struct raw *r = raw_connect();
	warren_worker_stats st;

	atomic_store(&runs, 0);
	raw_purge(r, "rpc.secure.dlq");
	/* One-way requests (no reply_to): what counts is whether they run. */
	raw_signed(r, "t-good", "m-good", warren_now_ms(), "{\"a\":1}", "{\"a\":1}");
	raw_signed(r, "t-tamper", "m-tamper", warren_now_ms(), "{\"a\":1}", "{\"a\":2}");
	raw_signed(r, "t-stale", "m-stale", warren_now_ms() - 600000, "{}", "{}");
	raw_signed(r, "t-good-again", "m-good", warren_now_ms(), "{\"a\":1}", "{\"a\":1}");
	assert_int_equal(raw_await_count(r, "rpc.secure.dlq", 2, 5000), 2);
	for (int i = 0; i < 100; i++) {
		warren_worker_get_stats(w, &st);
		if (st.replays == 1) {
			break;
		}
		usleep(20000);
	}
	assert_int_equal(atomic_load(&runs), 1);
	assert_int_equal(st.unauthenticated, 2);
	assert_int_equal(st.replays, 1);
	raw_purge(r, "rpc.secure.dlq");
	raw_close(r);
	warren_worker_free(w);
	warren_config_free(wc);
}

static void test_a_caller_refuses_a_reply_it_cannot_verify(void **state)
{
	warren_config *wc = side("mac", "svc", "svc.mac", "mac-svc", NULL);
	/* The caller's keyring lacks the service's key. */
	warren_config *cc = side("mac", "app", "app.mac", "mac-svc", NULL);
	warren_worker *w = start_worker(wc);
	warren_client *c = start_client(cc);
	char why[300];

	assert_int_equal(call(c, "secure.echo", why, sizeof(why)), -1);
	assert_string_equal(why, "the reply is not trusted: unknown key \"svc\"");
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

/* Calls per second for n calls, 64 in flight. */
struct load {
	atomic_int done, ok;
};

static void on_done(warren_err err, warren_reply *reply, const char *msg, void *arg)
{
	struct load *l = arg;

	if (err == WARREN_OK) {
		atomic_fetch_add(&l->ok, 1);
	}
	warren_reply_free(reply);
	atomic_fetch_add(&l->done, 1);
}

static double rate(warren_client *c, int n)
{
	struct load l = {0};
	int64_t t0 = testenv_mono_ms();

	for (int i = 0; i < n; i++) {
		while (i - atomic_load(&l.done) >= 64) {
			usleep(200);
		}
		assert_int_equal(warren_call_async(c, "secure.echo", NULL,
		                                   &(warren_call_opts){.timeout_ms = 30000}, on_done, &l,
		                                   NULL, 0),
		                 WARREN_OK);
	}
	while (atomic_load(&l.done) < n) {
		usleep(1000);
	}
	assert_int_equal(atomic_load(&l.ok), n);
	return n * 1000.0 / (double)(testenv_mono_ms() - t0 + 1);
}

static double measure(const char *scheme, const char *svc_key, const char *svc_ring,
                      const char *app_key, const char *app_ring)
{
	warren_config *wc = side(scheme, "svc", svc_key, svc_ring, NULL);
	warren_config *cc = side(scheme, "app", app_key, app_ring, NULL);
	warren_worker *w = start_worker(wc);
	warren_client *c = start_client(cc);
	double r;

	rate(c, 200); /* warm up */
	r = rate(c, 3000);
	warren_client_free(c);
	warren_worker_free(w);
	warren_config_free(wc);
	warren_config_free(cc);
	return r;
}

static void test_the_cost_of_signing(void **state)
{
	double none = measure("none", "svc.mac", "mac-svc", "app.mac", "mac-app");
	double mac = measure("mac", "svc.mac", "mac-svc", "app.mac", "mac-app");
	double ed = measure("ed25519", "svc.ed", "ed-svc", "app.ed", "ed-app");

	printf("# signing, 3000 calls, 64 in flight: none %.0f calls/s, mac %.0f (%.2f of none), "
	       "ed25519 %.0f (%.2f of none)\n",
	       none, mac, mac / none, ed, ed / none);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_signed_call_is_answered_with_mac),
		cmocka_unit_test(test_a_signed_call_is_answered_with_ed25519),
		cmocka_unit_test(test_refusals_never_run_the_handler),
		cmocka_unit_test(test_tampered_stale_and_replayed_requests_do_not_run_twice),
		cmocka_unit_test(test_a_caller_refuses_a_reply_it_cannot_verify),
		cmocka_unit_test(test_a_key_file_others_can_read_is_refused),
		cmocka_unit_test(test_the_cost_of_signing),
	};

	return cmocka_run_group_tests_name("sign", tests, setup, teardown);
}
