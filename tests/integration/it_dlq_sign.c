/* it_dlq_sign.c: rpc-dlq replay of signed dead letters against the private
 * broker (issue 13, finding 5). A replay is an operator's new call: rpc-dlq
 * signs it with its own [security] key, so the service runs it when its
 * security.allow lets that key call the method and dead-letters it again as
 * not-allowed when not; a signed letter with no operator key, or an
 * encrypted one, is refused by rpc-dlq with a message that says why. Both
 * schemes. */
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
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "envelope.h"
#include "security.h"
#include "sign.h"
#include "testenv.h"
#include "warren.h"

#define DLQ "rpc.secure.dlq"

static char dir[64];
static atomic_int runs;
static struct raw *raw;
/* The service's worker of the running test and its config: stopped by
 * stop_worker even when the test fails half-way. */
static warren_worker *worker;
static warren_config *worker_cfg;

static warren_status echo(warren_request *req, void *arg)
{
	atomic_fetch_add(&runs, 1);
	warren_request_set_result(req, warren_value_copy(warren_request_params(req)));
	return WARREN_STATUS_OK;
}

static void put(const char *name, const unsigned char *key, size_t len)
{
	testenv_write_key(dir, name, key, len, 0600);
}

/* A worker of service secure declares its queues (purging an absent one
 * would close the raw channel). */
static int declare_queues(void)
{
	warren_config *cfg =
	    testenv_config((const char *const[]){"worker.service=secure", "log.level=error", NULL});
	warren_worker *w = NULL;
	char why[300];
	int rc = -1;

	if (warren_worker_new(cfg, &w, why, sizeof(why)) == WARREN_OK &&
	    warren_worker_handle(w, "secure.admin", echo, NULL) == WARREN_OK &&
	    warren_worker_start(w, why, sizeof(why)) == WARREN_OK) {
		rc = 0;
	}
	warren_worker_free(w);
	warren_config_free(cfg);
	return rc;
}

/* Keys: the caller "app", the operator "ops" and the service "svc", for
 * each scheme. Keyrings: DIR/SCHEME-svc (app's and ops's), DIR/SCHEME-app
 * (svc's: app and ops verify replies with it). */
static int setup(void **state)
{
	unsigned char k[64], pk[32];
	char path[160];

	snprintf(dir, sizeof(dir), "/tmp/it-dlq-sign-%ld", (long)getpid());
	if (sodium_init() < 0 || mkdir(dir, 0700) != 0) {
		return -1;
	}
	for (const char *const *d =
	         (const char *const[]){"mac-svc", "mac-app", "ed-svc", "ed-app", NULL};
	     *d != NULL; d++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *d);
		mkdir(path, 0700);
	}
	for (const char *const *id = (const char *const[]){"app", "ops", NULL}; *id != NULL; id++) {
		snprintf(path, sizeof(path), "mac-svc/%s.key", *id);
		crypto_auth_keygen(k);
		put(strcmp(*id, "app") == 0 ? "app.mac" : "ops.mac", k, 32);
		put(path, k, 32);
		snprintf(path, sizeof(path), "ed-svc/%s.key", *id);
		crypto_sign_keypair(pk, k);
		put(strcmp(*id, "app") == 0 ? "app.ed" : "ops.ed", k, 64);
		put(path, pk, 32);
	}
	crypto_auth_keygen(k);
	put("svc.mac", k, 32);
	put("mac-app/svc.key", k, 32);
	crypto_sign_keypair(pk, k);
	put("svc.ed", k, 64);
	put("ed-app/svc.key", pk, 32);
	raw = raw_connect();
	setenv("WARREN_URL", testenv_url(), 1);
	unsetenv("COLUMNS");
	return declare_queues();
}

static int teardown(void **state)
{
	char cmd[128];

	raw_close(raw);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static int empty_queues(void **state)
{
	atomic_store(&runs, 0);
	raw_purge(raw, DLQ);
	raw_purge(raw, "rpc.secure");
	return 0;
}

static int stop_worker(void **state)
{
	warren_worker_free(worker);
	warren_config_free(worker_cfg);
	worker = NULL;
	worker_cfg = NULL;
	return 0;
}

/* The -o arguments of one side's [security] keys, in out[0..6]. */
struct sec_args {
	char s[64], i[64], k[200], r[200], a[300], e[200];
};

static void sec_args(struct sec_args *sa, const char *scheme, const char *id, const char *allow,
                     const char *encrypt)
{
	bool mac = strcmp(scheme, "mac") == 0;

	snprintf(sa->s, sizeof(sa->s), "security.scheme=%s", scheme);
	snprintf(sa->i, sizeof(sa->i), "security.key_id=%s", id);
	snprintf(sa->k, sizeof(sa->k), "security.key_file=%s/%s.%s", dir, id, mac ? "mac" : "ed");
	snprintf(sa->r, sizeof(sa->r), "security.keyring=%s/%s-%s", dir, mac ? "mac" : "ed",
	         strcmp(id, "svc") == 0 ? "svc" : "app");
	snprintf(sa->a, sizeof(sa->a), "security.allow=%s", allow != NULL ? allow : "");
	snprintf(sa->e, sizeof(sa->e), "security.encrypt=%s", encrypt != NULL ? encrypt : "");
}

static warren_config *side(const char *scheme, const char *id, const char *allow,
                           const char *encrypt)
{
	struct sec_args sa;

	sec_args(&sa, scheme, id, allow, encrypt);
	return testenv_config((const char *const[]){"worker.service=secure", sa.s, sa.i, sa.k, sa.r,
	                                            sa.a, sa.e, "log.level=error", NULL});
}

/* Starts the service with cfg (taken). */
static void start_worker(warren_config *cfg)
{
	warren_worker *w = NULL;
	char why[300] = "";

	worker_cfg = cfg;
	if (warren_worker_new(cfg, &w, why, sizeof(why)) != WARREN_OK) {
		fail_msg("warren_worker_new: %s", why);
	}
	assert_int_equal(warren_worker_handle(w, "secure.admin", echo, NULL), WARREN_OK);
	worker = w;
	if (warren_worker_start(w, why, sizeof(why)) != WARREN_OK) {
		fail_msg("warren_worker_start: %s", why);
	}
}

/* app calls secure.admin, which the service does not let it call: refused
 * and dead-lettered as not-allowed, signed by app, with a reply_to and an
 * rpc-deadline. */
static void dead_letter_as_app(const char *scheme, const char *encrypt)
{
	warren_config *cc = side(scheme, "app", NULL, encrypt);
	warren_client *c = NULL;
	warren_reply *reply = NULL;
	warren_value *params = warren_map();
	char why[300] = "";

	warren_map_set(params, "n", warren_int(1));
	assert_int_equal(warren_client_new(cc, "it_dlq_sign", &c, why, sizeof(why)), WARREN_OK);
	warren_call(c, "secure.admin", params, &(warren_call_opts){.timeout_ms = 5000}, &reply, why,
	            sizeof(why));
	assert_non_null(reply);
	assert_int_equal(warren_reply_status(reply), WARREN_STATUS_PERMISSION_DENIED);
	warren_reply_free(reply);
	warren_value_free(params);
	warren_client_free(c);
	warren_config_free(cc);
	assert_int_equal(raw_await_count(raw, DLQ, 1, 5000), 1);
}

/* ------------------------------------------------------------ running rpc-dlq */

struct run {
	int status;
	char out[2048], err[2048];
};

static void slurp(int fd, char *buf, size_t cap)
{
	ssize_t n = pread(fd, buf, cap - 1, 0);

	buf[n > 0 ? n : 0] = '\0';
	close(fd);
}

static int temp_fd(void)
{
	char path[] = "/tmp/it_dlq_sign.XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	return fd;
}

/* Runs $WARREN_BIN/rpc-dlq with args (NULL-ended) after the -o arguments
 * of the operator's key (scheme NULL: none). */
static struct run run_dlq(const char *scheme, const char *const *args)
{
	const char *bin = getenv("WARREN_BIN") != NULL ? getenv("WARREN_BIN") : "build/bin";
	int out = temp_fd(), err = temp_fd(), n = 1, st = 0;
	char path[512];
	const char *argv[32] = {path};
	struct sec_args sa;
	struct run r = {0};
	pid_t pid;

	snprintf(path, sizeof(path), "%s/rpc-dlq", bin);
	if (scheme != NULL) {
		sec_args(&sa, scheme, "ops", NULL, NULL);
		for (const char *const *o = (const char *const[]){sa.s, sa.i, sa.k, sa.r, NULL};
		     *o != NULL; o++) {
			argv[n++] = "-o";
			argv[n++] = *o;
		}
	}
	for (int i = 0; args[i] != NULL && n < 31; i++) {
		argv[n++] = args[i];
	}
	pid = fork();
	if (pid == 0) {
		dup2(out, 1);
		dup2(err, 2);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	assert_true(waitpid(pid, &st, 0) == pid);
	r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	slurp(out, r.out, sizeof(r.out));
	slurp(err, r.err, sizeof(r.err));
	return r;
}

static void expect_replay(const char *scheme, int status, const char *out, const char *err)
{
	struct run r = run_dlq(scheme, (const char *const[]){"replay", "secure", NULL});

	if (r.status != status || strcmp(r.out, out) != 0 || strcmp(r.err, err) != 0) {
		print_error(
		    "status %d (want %d)\nstdout [%s]\nwant   [%s]\nstderr [%s]\nwant   [%s]\n",
		    r.status, status, r.out, out, r.err, err);
	}
	assert_int_equal(r.status, status);
	assert_string_equal(r.out, out);
	assert_string_equal(r.err, err);
}

/* Puts m back into the DLQ (confirmed): the tests read dead letters, they
 * do not take them. */
static void put_back(const amqp_message_t *m)
{
	amqp_connection_state_t c = raw_conn(raw);

	assert_int_equal(amqp_basic_publish(c, 1, amqp_cstring_bytes(""), amqp_cstring_bytes(DLQ),
	                                    0, 0, &m->properties, m->body),
	                 AMQP_STATUS_OK);
	for (;;) {
		amqp_frame_t f;
		struct timeval tv = {5, 0};

		assert_int_equal(amqp_simple_wait_frame_noblock(c, &f, &tv), AMQP_STATUS_OK);
		if (f.frame_type == AMQP_FRAME_METHOD &&
		    f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
			break;
		}
		assert_int_not_equal(f.payload.method.id, AMQP_BASIC_NACK_METHOD);
	}
	assert_int_equal(raw_await_count(raw, DLQ, 1, 5000), 1);
}

/* The correlation id, reason and error of the one dead letter, which
 * stays in the queue. */
static void read_letter(char *corr, size_t cap, char *reason, char *error, size_t ecap)
{
	amqp_message_t m;
	const char *h;

	assert_int_equal(raw_get(raw, DLQ, &m), 0);
	snprintf(corr, cap, "%.*s", (int)m.properties.correlation_id.len,
	         (const char *)m.properties.correlation_id.bytes);
	h = raw_header(&m.properties, "rpc-dead-reason");
	snprintf(reason, 64, "%s", h != NULL ? h : "(none)");
	h = raw_header(&m.properties, "rpc-dead-error");
	snprintf(error, ecap, "%s", h != NULL ? h : "(none)");
	put_back(&m);
	amqp_destroy_message(&m);
}

static bool await_runs(int want, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 20) {
		if (atomic_load(&runs) == want) {
			return true;
		}
		usleep(20000);
	}
	return atomic_load(&runs) == want;
}

/* ------------------------------------------------------------------- tests */

static void replay_runs_when_the_operator_key_is_allowed(const char *scheme)
{
	start_worker(side(scheme, "svc", "secure.admin=ops,*=app+ops", NULL));

	dead_letter_as_app(scheme, NULL);
	assert_int_equal(atomic_load(&runs), 0);
	expect_replay(scheme, 0, "replayed 1 of 1 dead letter\n", "");
	/* Run by the service as ops's call, and not dead-lettered again. */
	if (!await_runs(1, 5000)) {
		char corr[80], reason[64], error[300];

		assert_int_equal(raw_await_count(raw, DLQ, 1, 5000), 1);
		read_letter(corr, sizeof(corr), reason, error, sizeof(error));
		fail_msg("the replay did not run; it is dead-lettered as %s: %s", reason, error);
	}
	assert_int_equal(raw_await_count(raw, "rpc.secure", 0, 5000), 0);
	usleep(300000);
	assert_int_equal(raw_queue_count(raw, DLQ), 0);
	assert_int_equal(atomic_load(&runs), 1);
}

static void
test_a_signed_dead_letter_replayed_with_an_allowed_operator_key_runs_ed25519(void **state)
{
	replay_runs_when_the_operator_key_is_allowed("ed25519");
}

static void test_a_signed_dead_letter_replayed_with_an_allowed_operator_key_runs_mac(void **state)
{
	replay_runs_when_the_operator_key_is_allowed("mac");
}

static void
test_a_replay_signed_with_a_key_the_service_does_not_allow_is_dead_lettered_again(void **state)
{
	start_worker(side("ed25519", "svc", "secure.admin=root,*=app+ops", NULL));
	char corr[80], reason[64], error[300];

	dead_letter_as_app("ed25519", NULL);
	expect_replay("ed25519", 0, "replayed 1 of 1 dead letter\n", "");
	/* Taken off the DLQ by the replay, then dead-lettered once more. */
	assert_int_equal(raw_await_count(raw, "rpc.secure", 0, 5000), 0);
	assert_int_equal(raw_await_count(raw, DLQ, 1, 5000), 1);
	read_letter(corr, sizeof(corr), reason, error, sizeof(error));
	assert_string_equal(reason, "not-allowed");
	assert_string_equal(error, "key \"ops\" may not call secure.admin");
	assert_int_equal(atomic_load(&runs), 0);
}

static void test_a_signed_dead_letter_is_not_replayed_without_an_operator_key(void **state)
{
	start_worker(side("mac", "svc", "secure.admin=ops,*=app+ops", NULL));
	char corr[80], reason[64], error[300], want[1200];

	dead_letter_as_app("mac", NULL);
	read_letter(corr, sizeof(corr), reason, error, sizeof(error));
	snprintf(want, sizeof(want),
	         "rpc-dlq: secure.admin %s: not replayed: it is signed (key \"app\") and rpc-dlq "
	         "has no key to sign its replay: set security.scheme, security.key_id and "
	         "security.key_file to an operator key the service's security.allow lets call "
	         "secure.admin; it stays in rpc.secure.dlq\n",
	         corr);
	expect_replay(NULL, 1, "replayed 0 of 1 dead letter\n", want);
	assert_int_equal(raw_queue_count(raw, DLQ), 1);
	assert_int_equal(atomic_load(&runs), 0);
}

static void test_an_encrypted_dead_letter_is_not_replayed(void **state)
{
	start_worker(side("ed25519", "svc", "secure.admin=ops,*=app+ops", NULL));
	char corr[80], reason[64], error[300], want[1200];

	dead_letter_as_app("ed25519", "secure.admin=svc");
	read_letter(corr, sizeof(corr), reason, error, sizeof(error));
	snprintf(want, sizeof(want),
	         "rpc-dlq: secure.admin %s: not replayed: its body is encrypted "
	         "(x-warren-sealed) between its caller and the service, and rpc-dlq cannot "
	         "encrypt it again for key \"ops\"; it stays in rpc.secure.dlq\n",
	         corr);
	expect_replay("ed25519", 1, "replayed 0 of 1 dead letter\n", want);
	assert_int_equal(raw_queue_count(raw, DLQ), 1);
	assert_int_equal(atomic_load(&runs), 0);
}

/* The operator's key is read before anything is taken from the queue. */
static void test_an_operator_key_that_cannot_be_read_is_a_configuration_error(void **state)
{
	struct run r;

	start_worker(side("mac", "svc", "secure.admin=ops,*=app+ops", NULL));
	dead_letter_as_app("mac", NULL);
	r = run_dlq(NULL,
	            (const char *const[]){"-o", "security.scheme=mac", "-o", "security.key_id=ops",
	                                  "-o", "security.key_file=/nonexistent/ops.mac", "-o",
	                                  "security.keyring=/tmp", "replay", "secure", NULL});
	assert_int_equal(r.status, 3);
	assert_string_equal(r.out, "");
	assert_string_equal(r.err,
	                    "rpc-dlq: security.key_file: /nonexistent/ops.mac: No such file or "
	                    "directory\n");
	assert_int_equal(raw_queue_count(raw, DLQ), 1);
}

/* What a replay carries, read off the queue while no worker consumes it:
 * ops's fresh signature, which the service's keys verify; rpc-attempt 1;
 * the message id; no reply_to, no rpc-deadline, nothing of app's
 * signature. */
static void test_a_replay_carries_the_operator_signature_and_no_reply_to_or_deadline(void **state)
{
	warren_config *wc;
	struct security *sec = NULL;
	struct envelope_meta m;
	struct checked chk;
	amqp_message_t got;
	char why[300], msgid[80];
	int64_t before;

	start_worker(side("ed25519", "svc", "secure.admin=ops,*=app+ops", NULL));
	dead_letter_as_app("ed25519", NULL);
	stop_worker(NULL);
	assert_int_equal(raw_get(raw, DLQ, &got), 0);
	snprintf(msgid, sizeof(msgid), "%.*s", (int)got.properties.message_id.len,
	         (const char *)got.properties.message_id.bytes);
	assert_true(got.properties._flags & AMQP_BASIC_REPLY_TO_FLAG);
	assert_non_null(raw_header(&got.properties, "rpc-deadline"));
	put_back(&got);
	amqp_destroy_message(&got);

	before = warren_now_ms();
	expect_replay("ed25519", 0, "replayed 1 of 1 dead letter\n", "");
	assert_int_equal(raw_await_count(raw, "rpc.secure", 1, 5000), 1);
	assert_int_equal(raw_get(raw, "rpc.secure", &got), 0);
	const amqp_basic_properties_t *p = &got.properties;
	assert_false(p->_flags & AMQP_BASIC_REPLY_TO_FLAG);
	assert_null(raw_header(p, "rpc-deadline"));
	assert_null(raw_header(p, "rpc-retry-token"));
	assert_string_equal(raw_header(p, "rpc-key-id"), "ops");
	assert_string_equal(raw_header(p, "rpc-attempt"), "1");
	assert_true(atoll(raw_header(p, "rpc-signed-at")) >= before);
	assert_int_equal(p->message_id.len, strlen(msgid));
	assert_memory_equal(p->message_id.bytes, msgid, strlen(msgid));
	assert_int_equal(envelope_read(p, &m, why, sizeof(why)), WARREN_OK);
	wc = side("ed25519", "svc", NULL, NULL);
	assert_int_equal(security_load(wc, &sec, why, sizeof(why)), 0);
	assert_int_equal(security_check_request(sec, p, &m, got.body.bytes, got.body.len, false,
	                                        &chk, why, sizeof(why)),
	                 WARREN_STATUS_OK);
	assert_string_equal(chk.signer, "ops");
	security_free(sec);
	amqp_destroy_message(&got);
	warren_config_free(wc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
	        test_a_signed_dead_letter_replayed_with_an_allowed_operator_key_runs_ed25519,
	        empty_queues, stop_worker),
	    cmocka_unit_test_setup_teardown(
	        test_a_signed_dead_letter_replayed_with_an_allowed_operator_key_runs_mac,
	        empty_queues, stop_worker),
	    cmocka_unit_test_setup_teardown(
	        test_a_replay_signed_with_a_key_the_service_does_not_allow_is_dead_lettered_again,
	        empty_queues, stop_worker),
	    cmocka_unit_test_setup_teardown(
	        test_a_signed_dead_letter_is_not_replayed_without_an_operator_key, empty_queues,
	        stop_worker),
	    cmocka_unit_test_setup_teardown(test_an_encrypted_dead_letter_is_not_replayed,
	                                    empty_queues, stop_worker),
	    cmocka_unit_test_setup_teardown(
	        test_an_operator_key_that_cannot_be_read_is_a_configuration_error, empty_queues,
	        stop_worker),
	    cmocka_unit_test_setup_teardown(
	        test_a_replay_carries_the_operator_signature_and_no_reply_to_or_deadline,
	        empty_queues, stop_worker),
	};

	return cmocka_run_group_tests_name("dlq_sign", tests, setup, teardown);
}
