/* test_security.c: how a worker checks signed requests against replays,
 * without a broker: the replay record is keyed by the signature, so that a
 * caller's retry under the same message id (a new call, signed anew) is
 * answered while the same signed message again is not; and a record too
 * small for the traffic never lets a replay through: when it is full, what
 * is older than what it had to forget is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "envelope.h"
#include "security.h"

static char dir[64];

/* The service's secret (svc) and the caller's (app), shared with the
 * service through its keyring (ring/app.key). */
static int setup(void **state)
{
	static const char *const files[] = {"svc.secret", "app.secret", "ring/app.key", NULL};
	unsigned char k[32];
	char path[128], hex[65];

	snprintf(dir, sizeof(dir), "/tmp/test-security-%ld", (long)getpid());
	snprintf(path, sizeof(path), "%s/ring", dir);
	if (sodium_init() < 0 || mkdir(dir, 0700) != 0 || mkdir(path, 0700) != 0) {
		return -1;
	}
	for (int i = 0; files[i] != NULL; i++) {
		FILE *f;

		if (i != 2) {
			crypto_auth_keygen(k); /* app.key below is app.secret */
		}
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		f = fopen(path, "w");
		if (f == NULL) {
			return -1;
		}
		sign_to_hex(k, sizeof(k), hex);
		fprintf(f, "%s\n", hex);
		fclose(f);
		chmod(path, 0600);
	}
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

/* The security of key id (mac, keyring DIR/ring), with extra settings
 * (KEY, VALUE pairs, NULL-ended). */
static struct security *load(const char *id, const char *const *extra)
{
	warren_config *cfg = warren_config_new();
	struct security *s = NULL;
	char v[160], why[300] = "";

	assert_int_equal(warren_config_set(cfg, "security.scheme", "mac", why, sizeof(why)),
	                 WARREN_OK);
	assert_int_equal(warren_config_set(cfg, "security.key_id", id, why, sizeof(why)),
	                 WARREN_OK);
	snprintf(v, sizeof(v), "%s/%s.secret", dir, id);
	assert_int_equal(warren_config_set(cfg, "security.key_file", v, why, sizeof(why)),
	                 WARREN_OK);
	snprintf(v, sizeof(v), "%s/ring", dir);
	assert_int_equal(warren_config_set(cfg, "security.keyring", v, why, sizeof(why)),
	                 WARREN_OK);
	for (int i = 0; extra != NULL && extra[i] != NULL; i += 2) {
		assert_int_equal(warren_config_set(cfg, extra[i], extra[i + 1], why, sizeof(why)),
		                 WARREN_OK);
	}
	assert_int_equal(security_load(cfg, &s, why, sizeof(why)), 0);
	assert_non_null(s);
	warren_config_free(cfg);
	return s;
}

/* A request as a caller signs it: its meta, signature and properties. */
struct request {
	struct envelope_meta m;
	struct signature sig;
	struct envelope_props ep;
};

static const char body[] = "{\"id\":42}";

static void sign(struct security *app, struct request *r, const char *corr, const char *msgid)
{
	*r = (struct request){.m = {.format = ENVELOPE_FMT_JSON, .attempt = 1, .persistent = true}};
	snprintf(r->m.method, sizeof(r->m.method), "user.get");
	snprintf(r->m.correlation_id, sizeof(r->m.correlation_id), "%s", corr);
	snprintf(r->m.message_id, sizeof(r->m.message_id), "%s", msgid);
	snprintf(r->m.reply_to, sizeof(r->m.reply_to), "%s", WIRE_DIRECT_REPLY_TO);
	security_sign_request(app, &r->m, body, strlen(body), &r->sig);
	envelope_request_props(&r->m, &r->ep);
	envelope_add_signature(&r->ep, r->sig.key_id, r->sig.signed_at_ms, r->sig.sig, r->sig.len);
}

/* What the service says of r, delivered for the first time. */
static int check(struct security *svc, const struct request *r, char *why, size_t len)
{
	struct checked chk;
	int st;

	why[0] = '\0';
	st = security_check_request(svc, &r->ep.props, &r->m, body, strlen(body), false, &chk, why,
	                            len);
	free(chk.body);
	return st;
}

/* A caller that retries a call under the same message id (the idempotent
 * pattern of warren(7)) sends a new request: a new correlation id, signed
 * anew. It is answered; only the same signed message again is a replay. */
static void test_a_retry_under_the_same_message_id_is_not_a_replay(void **state)
{
	struct security *svc = load("svc", NULL), *app = load("app", NULL);
	struct request first, retry;
	char why[300];

	sign(app, &first, "c-first", "order-7");
	sign(app, &retry, "c-retry", "order-7");
	assert_int_equal(check(svc, &first, why, sizeof(why)), WARREN_STATUS_OK);
	assert_int_equal(check(svc, &retry, why, sizeof(why)), WARREN_STATUS_OK);
	assert_int_equal(check(svc, &retry, why, sizeof(why)), WARREN_STATUS_ALREADY_EXISTS);
	assert_int_equal(check(svc, &first, why, sizeof(why)), WARREN_STATUS_ALREADY_EXISTS);
	assert_string_equal(why, "replay of a request signed by key \"app\" (message_id order-7)");
	security_free(svc);
	security_free(app);
}

/* why is the refusal of a request signed before what a full record
 * still reaches back to. */
static void assert_too_old(const char *why)
{
	long long ago = -1, reach = -1;
	char want[300];

	assert_int_equal(sscanf(why,
	                        "signed %lld ms ago: the replay record is full "
	                        "(security.replay_cache) and reaches back only %lld ms",
	                        &ago, &reach),
	                 2);
	snprintf(want, sizeof(want),
	         "signed %lld ms ago: the replay record is full (security.replay_cache) and "
	         "reaches back only %lld ms",
	         ago, reach);
	assert_string_equal(why, want);
	assert_true(ago >= reach);
}

/* The broker's redelivery of a request (its worker died holding it) is
 * the same message again, not a replay: taken, whether or not the record
 * saw it. And recorded: a copy published afterwards is a replay. */
static void test_a_redelivered_request_is_taken_and_recorded(void **state)
{
	struct security *svc = load("svc", NULL), *app = load("app", NULL);
	struct request r;
	struct checked chk;
	char why[300];

	sign(app, &r, "c-held", "m-held");
	for (int i = 0; i < 2; i++) {
		assert_int_equal(security_check_request(svc, &r.ep.props, &r.m, body, strlen(body),
		                                        true, &chk, why, sizeof(why)),
		                 WARREN_STATUS_OK);
	}
	assert_int_equal(check(svc, &r, why, sizeof(why)), WARREN_STATUS_ALREADY_EXISTS);
	security_free(svc);
	security_free(app);
}

/* More distinct requests inside the window than the record holds, then
 * the first of them again: it must not run a second time. Requests that
 * come in the order they were signed are all taken, however small the
 * record; one signed before what the record had to forget is refused
 * (the price of a record too small), one signed after is taken. */
static void test_a_replay_after_a_flood_larger_than_the_record_is_refused(void **state)
{
	struct security *svc =
	    load("svc", (const char *const[]){"security.replay_cache", "1024", NULL});
	struct security *app = load("app", NULL);
	struct request early, delayed, r, last;
	char corr[32], why[300];

	sign(app, &early, "c-early", "m-early");
	sign(app, &delayed, "c-delayed", "m-delayed");
	assert_int_equal(check(svc, &early, why, sizeof(why)), WARREN_STATUS_OK);
	for (int i = 0; i < 4 * 1024; i++) {
		snprintf(corr, sizeof(corr), "c-%d", i);
		sign(app, &r, corr, corr);
		assert_int_equal(check(svc, &r, why, sizeof(why)), WARREN_STATUS_OK);
		last = r;
	}
	/* The replay, and a request that waited while the others went by. */
	assert_int_equal(check(svc, &early, why, sizeof(why)), WARREN_STATUS_UNAUTHENTICATED);
	assert_too_old(why);
	assert_int_equal(check(svc, &delayed, why, sizeof(why)), WARREN_STATUS_UNAUTHENTICATED);
	assert_too_old(why);
	/* The record still holds the latest. */
	assert_int_equal(check(svc, &last, why, sizeof(why)), WARREN_STATUS_ALREADY_EXISTS);
	usleep(2000); /* signed after every request of the flood */
	sign(app, &r, "c-after", "m-after");
	assert_int_equal(check(svc, &r, why, sizeof(why)), WARREN_STATUS_OK);
	security_free(svc);
	security_free(app);
}

/* r as app signs it, at signed_at (a caller's clock, or a request that
 * waited in a queue). */
static void sign_at(const struct sign_key *app, struct request *r, const char *corr,
                    int64_t signed_at)
{
	struct sign_fields f;

	*r = (struct request){.m = {.format = ENVELOPE_FMT_JSON, .attempt = 1, .persistent = true}};
	snprintf(r->m.method, sizeof(r->m.method), "user.get");
	snprintf(r->m.correlation_id, sizeof(r->m.correlation_id), "%s", corr);
	snprintf(r->m.message_id, sizeof(r->m.message_id), "%s", corr);
	snprintf(r->sig.key_id, sizeof(r->sig.key_id), "app");
	r->sig.signed_at_ms = signed_at;
	f = (struct sign_fields){.key_id = "app",
	                         .method = r->m.method,
	                         .message_id = r->m.message_id,
	                         .correlation_id = r->m.correlation_id,
	                         .reply_to = "",
	                         .signed_at_ms = signed_at,
	                         .content_type = ENVELOPE_JSON,
	                         .body = body,
	                         .body_len = strlen(body)};
	sign_make(SIGN_MAC, app, &f, r->sig.sig, &r->sig.len);
	envelope_request_props(&r->m, &r->ep);
	envelope_add_signature(&r->ep, r->sig.key_id, r->sig.signed_at_ms, r->sig.sig, r->sig.len);
}

/* Requests signed up to 20 s ago, in any order, through a record of 16,
 * mixed with replays of any of them: whatever the record had to forget,
 * no request is ever taken twice. */
static void test_no_replay_passes_whatever_the_order(void **state)
{
	enum { N = 600 };
	struct security *svc =
	    load("svc", (const char *const[]){"security.replay_cache", "16", NULL});
	static struct request sent[N];
	bool taken[N] = {false};
	int n = 0, fresh = 0, too_old = 0, refused = 0;
	uint32_t seed = 12345;
	struct sign_key app;
	int64_t now = warren_now_ms();
	char path[128], why[300], corr[32];

	snprintf(path, sizeof(path), "%s/app.secret", dir);
	assert_int_equal(sign_load_secret(SIGN_MAC, "app", path, &app, why, sizeof(why)), 0);
	for (int op = 0; op < 4 * N; op++) {
		int i;

		seed = seed * 1103515245u + 12345u; /* the same run every time */
		if (n < N && (n == 0 || (seed >> 16) % 2 == 0)) {
			i = n++;
			snprintf(corr, sizeof(corr), "c-%d", i);
			sign_at(&app, &sent[i], corr, now - (int64_t)((seed >> 8) % 20000));
		} else {
			i = (int)((seed >> 8) % (uint32_t)n);
		}
		if (check(svc, &sent[i], why, sizeof(why)) == WARREN_STATUS_OK) {
			assert_false(taken[i]);
			taken[i] = true;
			fresh++;
		} else if (strncmp(why, "signed ", 7) == 0) {
			assert_too_old(why);
			too_old++;
		} else {
			assert_true(taken[i]);
			refused++;
		}
	}
	/* Each kind of answer came up, so the run tested something. */
	assert_true(fresh > 16 && too_old > 0 && refused > 0);
	security_free(svc);
}

/* The record's size is checked like any other key. */
static void test_the_replay_record_size_is_bounded(void **state)
{
	warren_config *cfg = warren_config_new();
	char why[300] = "";

	assert_int_equal(warren_config_set(cfg, "security.replay_cache", "8", why, sizeof(why)),
	                 WARREN_ERR_CONFIG);
	assert_string_equal(why, "security.replay_cache: 8 is out of range 16..16777216");
	warren_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_retry_under_the_same_message_id_is_not_a_replay),
	    cmocka_unit_test(test_a_redelivered_request_is_taken_and_recorded),
	    cmocka_unit_test(test_a_replay_after_a_flood_larger_than_the_record_is_refused),
	    cmocka_unit_test(test_no_replay_passes_whatever_the_order),
	    cmocka_unit_test(test_the_replay_record_size_is_bounded),
	};

	return cmocka_run_group_tests_name("security", tests, setup, teardown);
}
