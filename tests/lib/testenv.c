/* testenv.c: processes and a plain AMQP client for the integration tests. */
#include "testenv.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <amqp_tcp_socket.h>

#include "envelope.h"
#include "sign.h"

const char *testenv_url(void)
{
	const char *url = getenv("WARREN_TEST_URL");

	if (url == NULL || url[0] == '\0') {
		fprintf(stderr, "WARREN_TEST_URL is not set: run through scripts/run-tests.sh\n");
		exit(77);
	}
	return url;
}

warren_config *testenv_config(const char *const *overrides)
{
	warren_config *cfg = warren_config_new();
	char why[300];

	if (cfg == NULL || warren_config_set(cfg, "broker.url", testenv_url(), why, sizeof(why)) != 0) {
		abort();
	}
	for (int i = 0; overrides != NULL && overrides[i] != NULL; i++) {
		if (warren_config_set_arg(cfg, overrides[i], why, sizeof(why)) != WARREN_OK) {
			fprintf(stderr, "bad override %s: %s\n", overrides[i], why);
			abort();
		}
	}
	return cfg;
}

int64_t testenv_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *testenv_db(void)
{
	const char *db = getenv("WARREN_TEST_DB");

	if (db == NULL || db[0] == '\0') {
		fprintf(stderr, "WARREN_TEST_DB is not set: run through scripts/run-tests.sh\n");
		exit(77);
	}
	return db;
}

/* true once method answers anything at all (an error status included). */
static bool answers(const char *method, const char *json)
{
	warren_config *cfg = testenv_config((const char *const[]){"broker.connect_timeout=1s", NULL});
	warren_client *c = NULL;
	warren_reply *reply = NULL;
	warren_value *params = NULL;
	warren_call_opts o = {.timeout_ms = 500};
	warren_err err = WARREN_ERR_TRANSPORT;

	if (json != NULL && warren_value_from_json(json, strlen(json), &params, NULL, 0) != WARREN_OK) {
		abort();
	}
	if (warren_client_new(cfg, "testenv", &c, NULL, 0) == WARREN_OK) {
		err = warren_call(c, method, params, &o, &reply, NULL, 0);
	}
	warren_reply_free(reply);
	warren_value_free(params);
	warren_client_free(c);
	warren_config_free(cfg);
	return err == WARREN_OK || err == WARREN_ERR_REMOTE;
}

pid_t testenv_spawn_probe(const char *program, const char *const *args, const char *probe,
                          const char *probe_json)
{
	const char *bin = getenv("WARREN_BIN") != NULL ? getenv("WARREN_BIN") : "build/bin";
	char path[512], url[512];
	const char *argv[32] = {path, "-o", url};
	int n = 3;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/%s", bin, program);
	snprintf(url, sizeof(url), "broker.url=%s", testenv_url());
	for (int i = 0; args != NULL && args[i] != NULL && n < 31; i++) {
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	pid = fork();
	if (pid == 0) {
		execv(path, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; probe != NULL && i < 100 && !answers(probe, probe_json); i++) {
		usleep(100000);
	}
	return pid;
}

pid_t testenv_spawn(const char *program, const char *const *args, bool wait)
{
	return testenv_spawn_probe(program, args, wait ? "example.echo" : NULL, NULL);
}

int testenv_stop(pid_t pid, int sig)
{
	int status = 0;

	kill(pid, sig);
	if (waitpid(pid, &status, 0) < 0) {
		return -1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ------------------------------------------------------------ raw client */

struct raw {
	amqp_connection_state_t conn;
	char url[512];
};

struct raw *raw_connect(void)
{
	struct raw *r = calloc(1, sizeof(*r));
	struct amqp_connection_info info;

	snprintf(r->url, sizeof(r->url), "%s", testenv_url());
	if (amqp_parse_url(r->url, &info) != AMQP_STATUS_OK) {
		abort();
	}
	r->conn = amqp_new_connection();
	amqp_socket_t *s = amqp_tcp_socket_new(r->conn);
	if (amqp_socket_open(s, info.host, info.port) != AMQP_STATUS_OK ||
	    amqp_login(r->conn, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user,
	               info.password)
	            .reply_type != AMQP_RESPONSE_NORMAL ||
	    amqp_channel_open(r->conn, 1) == NULL || amqp_confirm_select(r->conn, 1) == NULL) {
		fprintf(stderr, "raw_connect failed\n");
		abort();
	}
	return r;
}

void raw_close(struct raw *r)
{
	if (r == NULL) {
		return;
	}
	amqp_channel_close(r->conn, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(r->conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(r->conn);
	free(r);
}

int raw_consume_replies(struct raw *r)
{
	return amqp_basic_consume(r->conn, 1, amqp_cstring_bytes("amq.rabbitmq.reply-to"),
	                          amqp_empty_bytes, 0, 1, 0, amqp_empty_table) != NULL
	               ? 0
	               : -1;
}

/* Reads frames until the publish's basic.ack; deliveries that arrive first
 * are put back for raw_wait by the library. */
static int await_ack(struct raw *r)
{
	for (;;) {
		amqp_frame_t f;
		struct timeval tv = {5, 0};

		if (amqp_simple_wait_frame_noblock(r->conn, &f, &tv) != AMQP_STATUS_OK) {
			return -1;
		}
		if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
			return 0;
		}
		if (f.frame_type == AMQP_FRAME_METHOD &&
		    f.payload.method.id == AMQP_BASIC_DELIVER_METHOD) {
			return -2; /* not expected before the ack in these tests */
		}
	}
}

int raw_publish(struct raw *r, const char *routing_key, const amqp_basic_properties_t *p,
                const void *body, size_t len)
{
	amqp_bytes_t b = {.len = len, .bytes = (void *)body};

	if (amqp_basic_publish(r->conn, 1, amqp_cstring_bytes("rpc"), amqp_cstring_bytes(routing_key),
	                       0, 0, p, b) != AMQP_STATUS_OK) {
		return -1;
	}
	return await_ack(r);
}

int raw_publish_to(struct raw *r, const char *exchange, const char *routing_key,
                   const amqp_basic_properties_t *p, const void *body, size_t len)
{
	amqp_bytes_t b = {.len = len, .bytes = (void *)body};

	if (amqp_basic_publish(r->conn, 1, amqp_cstring_bytes(exchange),
	                       amqp_cstring_bytes(routing_key), 0, 0, p, b) != AMQP_STATUS_OK) {
		return -1;
	}
	return await_ack(r);
}

int raw_wait(struct raw *r, int timeout_ms, amqp_envelope_t *env)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	amqp_rpc_reply_t rep;

	amqp_maybe_release_buffers(r->conn);
	rep = amqp_consume_message(r->conn, env, &tv, 0);
	return rep.reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
}

amqp_connection_state_t raw_conn(struct raw *r)
{
	return r->conn;
}

long raw_queue_count(struct raw *r, const char *queue)
{
	amqp_queue_declare_ok_t *ok = amqp_queue_declare(r->conn, 1, amqp_cstring_bytes(queue), 1, 0,
	                                                 0, 0, amqp_empty_table);

	return ok != NULL ? (long)ok->message_count : -1;
}

int raw_get(struct raw *r, const char *queue, amqp_message_t *msg)
{
	amqp_rpc_reply_t rep = amqp_basic_get(r->conn, 1, amqp_cstring_bytes(queue), 1);

	if (rep.reply_type != AMQP_RESPONSE_NORMAL || rep.reply.id != AMQP_BASIC_GET_OK_METHOD) {
		return -1;
	}
	rep = amqp_read_message(r->conn, 1, msg, 0);
	return rep.reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
}

const char *raw_header(const amqp_basic_properties_t *p, const char *key)
{
	static char buf[1024];
	const amqp_field_value_t *v = wire_header(p, key);

	if (v == NULL) {
		return NULL;
	}
	switch (v->kind) {
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		snprintf(buf, sizeof(buf), "%.*s", (int)v->value.bytes.len,
		         (const char *)v->value.bytes.bytes);
		return buf;
	case AMQP_FIELD_KIND_I64:
		snprintf(buf, sizeof(buf), "%lld", (long long)v->value.i64);
		return buf;
	case AMQP_FIELD_KIND_I32:
		snprintf(buf, sizeof(buf), "%d", (int)v->value.i32);
		return buf;
	default:
		return "(another type)";
	}
}

long raw_consumer_count(struct raw *r, const char *queue)
{
	amqp_queue_declare_ok_t *ok = amqp_queue_declare(r->conn, 1, amqp_cstring_bytes(queue), 1, 0,
	                                                 0, 0, amqp_empty_table);

	return ok != NULL ? (long)ok->consumer_count : -1;
}

int raw_purge(struct raw *r, const char *queue)
{
	return amqp_queue_purge(r->conn, 1, amqp_cstring_bytes(queue)) != NULL ? 0 : -1;
}

long raw_await_count(struct raw *r, const char *queue, long want, int timeout_ms)
{
	int64_t until = testenv_mono_ms() + timeout_ms;
	long n = raw_queue_count(r, queue);

	while (n != want && testenv_mono_ms() < until) {
		usleep(20000);
		n = raw_queue_count(r, queue);
	}
	return n;
}

int testenv_broker_ctl(const char *args)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "tests/lib/broker.sh ctl '%s' %s >/dev/null 2>&1",
	         getenv("WARREN_TEST_BROKER_DIR"), args);
	return system(cmd);
}

static pid_t frozen_broker = -1, thaw_guard = -1;

static pid_t broker_pid(void)
{
	const char *dir = getenv("WARREN_TEST_BROKER_DIR");
	char path[512];
	long pid = -1;
	FILE *f;

	if (dir == NULL) {
		fprintf(stderr, "testenv: WARREN_TEST_BROKER_DIR is not set\n");
		abort();
	}
	snprintf(path, sizeof(path), "%s/rabbitmq.pid", dir);
	f = fopen(path, "r");
	if (f == NULL || fscanf(f, "%ld", &pid) != 1 || pid <= 0) {
		fprintf(stderr, "testenv: no broker pid in %s\n", path);
		abort();
	}
	fclose(f);
	return (pid_t)pid;
}

void testenv_broker_freeze(void)
{
	frozen_broker = broker_pid();
	thaw_guard = fork();
	if (thaw_guard < 0) {
		perror("testenv: fork");
		abort();
	}
	if (thaw_guard == 0) {
		sleep(60);
		kill(frozen_broker, SIGCONT);
		_exit(0);
	}
	if (kill(frozen_broker, SIGSTOP) != 0) {
		perror("testenv: SIGSTOP to the broker");
		abort();
	}
}

void testenv_broker_thaw(void)
{
	if (frozen_broker > 0) {
		kill(frozen_broker, SIGCONT);
	}
	if (thaw_guard > 0) {
		kill(thaw_guard, SIGKILL);
		waitpid(thaw_guard, NULL, 0);
	}
	frozen_broker = thaw_guard = -1;
}

void testenv_write_key(const char *dir, const char *name, const unsigned char *key, size_t len,
                       mode_t mode)
{
	char path[512], hex[260];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (f == NULL || len * 2 >= sizeof(hex)) {
		fprintf(stderr, "testenv: cannot write the key %s\n", path);
		abort();
	}
	sign_to_hex(key, len, hex);
	fprintf(f, "%s\n", hex);
	fclose(f);
	chmod(path, mode);
}

uint64_t raw_take(struct raw *r, const char *queue)
{
	amqp_rpc_reply_t rep = amqp_basic_get(r->conn, 1, amqp_cstring_bytes(queue), 0);
	amqp_message_t msg;
	uint64_t tag;

	if (rep.reply_type != AMQP_RESPONSE_NORMAL || rep.reply.id != AMQP_BASIC_GET_OK_METHOD) {
		return 0;
	}
	tag = ((amqp_basic_get_ok_t *)rep.reply.decoded)->delivery_tag;
	if (amqp_read_message(r->conn, 1, &msg, 0).reply_type != AMQP_RESPONSE_NORMAL) {
		return 0;
	}
	amqp_destroy_message(&msg);
	return tag;
}

int raw_declare_service(struct raw *r, const char *service)
{
	amqp_table_entry_t qt = {
	    .key = amqp_cstring_bytes("x-queue-type"),
	    .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}};
	char queue[128], pattern[128];

	snprintf(queue, sizeof(queue), "rpc.%s", service);
	snprintf(pattern, sizeof(pattern), "%s.#", service);
	if (amqp_queue_declare(r->conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0,
	                       (amqp_table_t){1, &qt}) == NULL ||
	    amqp_queue_bind(r->conn, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes("rpc"),
	                    amqp_cstring_bytes(pattern), amqp_empty_table) == NULL) {
		return -1;
	}
	return raw_purge(r, queue) == 0 ? 0 : -1;
}

warren_worker *testenv_worker_start(const warren_config *cfg, const char *method,
                                    warren_handler_fn fn, void *arg)
{
	warren_worker *w = NULL;
	char why[300] = "";

	if (warren_worker_new(cfg, &w, why, sizeof(why)) != WARREN_OK ||
	    warren_worker_handle(w, method, fn, arg) != WARREN_OK ||
	    warren_worker_start(w, why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, "worker for %s: %s\n", method, why);
		warren_worker_free(w);
		return NULL;
	}
	return w;
}

warren_err testenv_worker_stop(warren_worker *w)
{
	warren_err err = warren_worker_stop(w, 5000);

	warren_worker_free(w);
	return err;
}
